"""``qanat import`` against the real broker, transform and SQLite sink: CSV, NDJSON and JSON
arrays land in the store (vertical ``catalog``: no schema), bad lines are dead-lettered or
reported with their line, and an import killed mid-way and run again duplicates nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from tests.kafka_helpers import consume
from tests.services import Services

pytestmark = pytest.mark.integration


def _env(kafka: KafkaSettings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
        "QANAT_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def _import_command(path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.cli.main",
        "import",
        str(path),
        "--vertical",
        "catalog",
        "--type",
        "product",
        "--progress",
        "plain",
        *extra,
    ]


def _run_import(env: dict[str, str], path: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        _import_command(path, *extra), env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report: dict[str, Any] = orjson.loads(result.stdout.splitlines()[-1])
    return report


def _stored(path: Path) -> list[tuple[str, str, dict[str, Any], str]]:
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT source_id, name, data, ingestion_id FROM records WHERE vertical = 'catalog'"
            ).fetchall()
    except sqlite3.OperationalError:  # the sink has not created the table yet
        return []
    return [(row[0], row[1], orjson.loads(row[2]), row[3]) for row in rows]


def _wait_for(what: str, check: Callable[[], bool], services: Services, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        services.check_alive()
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{services.log_tails()}")


def _pipeline(services: Services, kafka: KafkaSettings, db: Path) -> None:
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
            "QANAT_SQLITE_PATH": str(db),
        }
    )
    services.start("transform", "transform")
    services.start("sink-sqlite", "sink", "sqlite")


def test_csv_ndjson_and_json_files_reach_the_store(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    csv_file = tmp_path / "products.csv"
    csv_file.write_text(
        'id,title,price\n1,Lamp,9.5\n2,"Desk, oak",120\n3,short row\n4,Chair,\n', "utf-8"
    )
    ndjson_file = tmp_path / "more.ndjson"
    ndjson_file.write_bytes(
        b'{"name": "Stool", "source_id": "n1", "price": 5}\nnot json at all\n{"title": "Bench"}\n'
    )
    json_file = tmp_path / "items.json"
    json_file.write_bytes(orjson.dumps({"items": [{"name": "Shelf", "sku": "j1"}, 7]}))
    env = _env(kafka, tmp_path / "data")
    db = tmp_path / "store.db"
    _pipeline(services, kafka, db)  # starting while the files are imported

    csv_report = _run_import(
        env, csv_file, "--map", "name=title", "--map", "source_id=id", "--cast", "price=float"
    )
    assert csv_report["produced"] == 3 and csv_report["rejected"] == 1
    assert csv_report["errors"] == [
        {"record": 3, "line": 4, "message": "expected 3 cells (as in the header), got 2"}
    ]
    ndjson_report = _run_import(env, ndjson_file)
    assert ndjson_report["produced"] == 3
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("mapping: {source_id: sku}\n", "utf-8")
    json_report = _run_import(env, json_file, "--json-items", "items.item", "--mapping", mapping)
    assert json_report["produced"] == 2

    _wait_for("6 stored records", lambda: len(_stored(db)) == 6, services, timeout=90)
    by_id = {row[0]: row for row in _stored(db)}
    assert by_id["1"][1:3] == ("Lamp", {"price": 9.5})
    assert by_id["2"][1:3] == ("Desk, oak", {"price": 120.0})
    assert by_id["4"][1:3] == ("Chair", {"price": None})
    assert by_id["n1"][1:3] == ("Stool", {"price": 5})
    assert by_id["j1"][1] == "Shelf"
    bench = [row for row in by_id.values() if row[1] == "Bench"]
    assert bench and bench[0][0] == f"{ndjson_report['file_id']}:3"
    assert {row[3] for row in by_id.values()} == {
        csv_report["ingestion_id"],
        ndjson_report["ingestion_id"],
        json_report["ingestion_id"],
    }

    dead = consume(kafka, kafka.topics.dlq, expected=2, timeout=60)
    reasons = {letter.value: letter.headers["qanat.error.stage"] for letter in dead}
    assert reasons == {b"not json at all": "parse", b"7": "normalize"}

    summaries = consume(kafka, kafka.topics.ingestions, expected=3, timeout=30, settle=0.5)
    accepted = {orjson.loads(m.value or b"{}").get("accepted") for m in summaries}
    assert accepted == {3, 2}

    # The same file again: the same keys, so nothing is added to the store.
    again = _run_import(
        env, csv_file, "--map", "name=title", "--map", "source_id=id", "--cast", "price=float"
    )
    _wait_for(
        "the re-import stored",
        lambda: {r[3] for r in _stored(db) if r[0] == "1"} == {again["ingestion_id"]},
        services,
        timeout=60,
    )
    assert len(_stored(db)) == 6


ROWS = 20_000


def _wait_for_checkpoint(state: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in state.glob("*.json"):
            try:
                saved: dict[str, Any] = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if saved["number"] >= 500:
                return saved
        assert process.poll() is None, "the import ended before a checkpoint was seen"
        time.sleep(0.002)
    raise AssertionError("no checkpoint within 60 s")


def test_an_import_killed_mid_way_and_run_again_duplicates_nothing(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    big = tmp_path / f"big-{uuid.uuid4().hex[:6]}.csv"
    with big.open("w", encoding="utf-8") as out:
        out.write("title,price\n")
        for index in range(ROWS):
            out.write(f"Product {index},{index % 100}\n")
    env = _env(kafka, tmp_path / "data")
    state = tmp_path / "data" / "imports"
    db = tmp_path / "store.db"
    _pipeline(services, kafka, db)
    args = ("--map", "name=title", "--checkpoint-every", "500")

    # A producer queue of 20 records slows the first run down (a few thousand records/s),
    # so it is surely killed mid-way however fast the machine.
    slow = env | {"QANAT_KAFKA_CLIENT_CONFIG": '{"queue.buffering.max.messages": "20"}'}
    process = subprocess.Popen(
        _import_command(big, *args), env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    saved = _wait_for_checkpoint(state, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert saved["number"] < ROWS

    report = _run_import(env, big, *args)
    assert report["completed"] and report["resumed_after"] >= saved["number"]
    assert report["produced"] == ROWS
    assert report["ingestion_id"] == saved["ingestion_id"]
    assert not list(state.glob("*.json")), "the checkpoint is removed once complete"

    landed = consume(kafka, kafka.topics.raw, expected=ROWS, timeout=90)
    keys = Counter(message.key for message in landed)
    assert len(keys) == ROWS
    resent = len(landed) - ROWS
    assert 0 <= resent < ROWS - saved["number"], "only what followed the checkpoint is resent"
    assert {m.headers["qanat.ingestion_id"] for m in landed} == {saved["ingestion_id"]}

    _wait_for(f"{ROWS} stored records", lambda: len(_stored(db)) >= ROWS, services, timeout=120)
    stored = _stored(db)
    assert len(stored) == ROWS
    assert {row[1] for row in stored} == {f"Product {index}" for index in range(ROWS)}
