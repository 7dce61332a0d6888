"""`qanat dlq replay` end to end: the real transform and SQLite sink as processes, the real
broker; a replay killed with SIGKILL resumes without republishing anything."""

from __future__ import annotations

import signal
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawMeta
from pipelines.core.topics import ensure_topics
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.read import DlqScanner
from pipelines.dlq.state import DlqState
from pipelines.transform.registry import SchemaRegistry
from tests.integration.test_skeleton import _wait_for
from tests.kafka_helpers import consume
from tests.pipelines.core.test_deadletter import SCHEMA, dlq, price_as_text, seed_dead_letters
from tests.services import Services

pytestmark = pytest.mark.integration

FIXED = {"type": "object", "properties": {"price": {"type": ["number", "string"]}}}


def _dead_letters(kafka: KafkaSettings) -> int:
    with DlqScanner(kafka) as scanner:
        return sum(1 for _ in scanner.scan(scanner.ranges(DlqFilter())))


def _dead_letters_are(kafka: KafkaSettings, expected: int) -> Callable[[], bool]:
    return lambda: _dead_letters(kafka) == expected


def _rows(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT source_id, name FROM records ORDER BY source_id").fetchall()
        except sqlite3.OperationalError:  # the sink has not created its table yet
            return []


def _replay(kafka: KafkaSettings, *args: str) -> dict[str, Any]:
    result = dlq(kafka, "replay", "--json", *args)
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = orjson.loads(result.stdout)
    return summary


def test_fix_the_schema_dry_run_replay_and_loop_guard(
    services: Services, kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"dlq{uuid.uuid4().hex[:10]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    ensure_topics(kafka.client(), kafka.topics, 2, 1)
    schemas = tmp_path / "schemas" / "shop"
    schemas.mkdir(parents=True)
    (schemas / "product.json").write_bytes(orjson.dumps(SCHEMA))
    database = tmp_path / "qanat.db"
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "QANAT_KAFKA_TOPIC_PREFIX": prefix,
            "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "schemas"),
            "QANAT_SQLITE_PATH": str(database),
        }
    )
    services.start("transform", "transform")
    services.start("sink-sqlite", "sink", "sqlite")

    # 2 valid events, 4 whose text price the schema refuses, 2 that are not JSON.
    events = [orjson.dumps({"name": f"ok {i}", "source_id": f"ok{i}", "price": i}) for i in (1, 2)]
    events += [price_as_text(i) for i in range(4)] + [b"not json", b"{oops"]
    producer = Producer(kafka.client())
    for i, value in enumerate(events):
        meta = RawMeta("shop", "product", "test", "ing-1", f"ev{i}", "2026-01-01T00:00:00.000000Z")
        producer.produce(kafka.topics.raw, value, f"ev{i}".encode(), headers=meta.headers())
    assert producer.flush(30) == 0
    _wait_for("6 dead letters", _dead_letters_are(kafka, 6), services)
    _wait_for("2 rows", lambda: len(_rows(database)) == 2, services)

    dry = _replay(kafka, "--dry-run")
    assert (dry["would_pass"], dry["would_fail"]) == (0, 6)
    registry = SchemaRegistry(kafka)
    assert registry.register("shop", "product", FIXED) == 2
    registry.close()
    dry = _replay(kafka, "--dry-run")
    assert (dry["would_pass"], dry["would_fail"]) == (4, 2)
    assert dry["fail_reasons"] == {"parse: not valid JSON": 2}
    log = services.logs / "transform.log"
    _wait_for("the transform on v2", lambda: "at version 2" in log.read_text(), services)

    first = _replay(kafka)
    assert (first["replayed"], first["skipped_loop_guard"], first["resumed"]) == (6, 0, False)
    _wait_for("6 rows", lambda: len(_rows(database)) == 6, services)
    rows = _rows(database)
    assert [source_id for source_id, _name in rows] == ["ok1", "ok2", "s0", "s1", "s2", "s3"]
    _wait_for("2 more dead letters", _dead_letters_are(kafka, 8), services)

    # Again: only the 2 that failed again are republished, until the loop guard stops them.
    for run, expected in ((2, 10), (3, 12)):
        summary = _replay(kafka)
        assert (summary["replayed"], summary["resumed"]) == (2, True), run
        _wait_for(f"{expected} dead letters", _dead_letters_are(kafka, expected), services)
    last = _replay(kafka)
    assert (last["replayed"], last["skipped_loop_guard"]) == (0, 2)
    other = _replay(kafka, "--vertical", "shop")  # another replay: nothing twice
    assert (other["replayed"], other["already_replayed"], other["skipped_loop_guard"]) == (0, 10, 2)

    raw = consume(kafka, kafka.topics.raw, 8 + 6 + 2 + 2, timeout=30)
    assert len(raw) == 18
    replays = [m.headers.get("qanat.replay.count") for m in raw]
    assert sorted(replays, key=str) == ["1"] * 6 + ["2"] * 2 + ["3"] * 2 + [None] * 8
    assert _rows(database) == rows  # nothing added, nothing duplicated


def test_a_killed_replay_resumes_without_republishing(
    services: Services, kafka: KafkaSettings
) -> None:
    total = 30
    seed_dead_letters(kafka, [b"bad %d" % i for i in range(total)])
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        }
    )
    replay = services.start("replay", "dlq", "replay", "--rate", "8", "--json")

    def committed() -> int:
        found = DlqState.load(kafka).replays
        return next(iter(found.values())).counts.get("replayed", 0) if found else 0

    _wait_for("a few committed replays", lambda: committed() >= 5, services, timeout=30)
    replay.send_signal(signal.SIGKILL)
    replay.wait(10)
    before = committed()
    assert 5 <= before < total

    resumed = _replay(kafka)
    assert resumed["resumed"] is True
    assert resumed["replayed"] == total - before
    landed = consume(kafka, kafka.topics.raw, total, timeout=30)
    assert len(landed) == total
    assert len({m.headers["qanat.event_id"] for m in landed}) == total
