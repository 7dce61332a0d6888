"""`qanat dlq`: the dead-letter contract helpers as pure logic, and every command against
the real broker (dead letters made by the transform's own code) and the real stores."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer, TopicPartition
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import replay_headers
from pipelines.core.records import RawMeta
from pipelines.dlq.export import export_line, parse_line, read_import
from pipelines.dlq.filters import DlqFilter, parse_when
from pipelines.dlq.letter import DeadLetter
from pipelines.dlq.read import DlqScanner
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.transformer import Transformer
from tests.kafka_helpers import consume

SCHEMA = {"type": "object", "properties": {"price": {"type": "number"}}}


def seed_dead_letters(
    kafka: KafkaSettings,
    values: Sequence[bytes | None],
    vertical: str = "shop",
    replay_count: int = 0,
    prefix: str = "e",
) -> None:
    """Run ``values`` through the transform's own code (schema: price a number) and put the
    dead letters it makes in the DLQ topic, as the running transform would."""
    transformer = Transformer(SchemaStore({(vertical, "product"): SCHEMA}))
    producer = Producer(kafka.client())
    for i, value in enumerate(values):
        meta = RawMeta(
            vertical,
            "product",
            "http",
            f"ing-{i % 2}",
            f"{prefix}{i}",
            "2026-01-01T00:00:00.000000Z",
        )
        headers = [*meta.headers(), ("qanat.replay.count", str(replay_count).encode())]
        routed = transformer.process(value, f"k{i}".encode(), headers, kafka.topics.raw, 0, i)
        assert routed.dead, value
        producer.produce(kafka.topics.dlq, routed.payload, routed.key, headers=routed.headers)
    assert producer.flush(30) == 0


def price_as_text(i: int) -> bytes:
    return orjson.dumps({"name": f"item {i}", "source_id": f"s{i}", "price": str(i)})


def dlq(kafka: KafkaSettings, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``qanat dlq ...`` in-process against ``kafka``; returns the click result."""
    environment = {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        **(env or {}),
    }
    result = CliRunner().invoke(app, ["dlq", *args], env=environment, catch_exceptions=False)
    return result


def lines(output: str) -> list[Any]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


# --- pure logic ---------------------------------------------------------------------


def test_replay_headers_drop_the_error_and_count_the_replay() -> None:
    original = [
        ("qanat.vertical", b"shop"),
        ("qanat.replay.last_error", b"parse: older"),
        ("qanat.error.stage", b"validate"),
        ("qanat.error.reason", b"schema validation failed"),
        ("qanat.error.details", b"[]"),
        ("qanat.error.offset", b"4"),
        ("qanat.replay.count", b"2"),
    ]
    headers, count = replay_headers(original)
    assert count == 3
    assert headers == [
        ("qanat.vertical", b"shop"),
        ("qanat.replay.count", b"3"),
        ("qanat.replay.last_error", b"validate: schema validation failed"),
    ]


def test_a_filter_round_trips_and_its_fingerprint_is_stable() -> None:
    wanted = DlqFilter(
        vertical="shop",
        reason="schema",
        headers=(("qanat.source", "http"),),
        since=parse_when("2026-01-01T00:00:00Z"),
        partitions=(0, 1),
        to_offset=9,
    )
    again = DlqFilter.from_json(orjson.loads(orjson.dumps(wanted.to_json())))
    assert again == wanted
    assert again.fingerprint(3) == wanted.fingerprint(3) != wanted.fingerprint(2)
    letter = DeadLetter(1, 9, 0, None, b"{}", [("qanat.vertical", b"shop")])
    assert not wanted.matches(letter)  # no reason, no source header
    letter = DeadLetter(
        1,
        9,
        0,
        None,
        b"{}",
        [
            ("qanat.vertical", b"shop"),
            ("qanat.source", b"http"),
            ("qanat.error.reason", b"Schema validation failed"),
            ("qanat.error.at", b"2026-02-01T00:00:00Z"),
        ],
    )
    assert wanted.matches(letter)
    assert not DlqFilter(until=parse_when("2026-01-15T00:00:00Z")).matches(letter)
    assert DlqFilter(until=parse_when("2026-01-15T00:00:00Z")).time_only


def test_export_lines_import_back_exactly() -> None:
    for value in (b'{"name": "x"}', b"\xff\x00 not json", None):
        letter = DeadLetter(0, 3, 1, b"\xfe key", value, [("qanat.vertical", b"shop")])
        item = parse_line(export_line(letter, "p.dlq").decode())
        assert item.key == b"\xfe key"
        assert item.headers == [("qanat.vertical", b"shop")]
        if value is not None and value.startswith(b"{"):
            assert orjson.loads(item.value or b"") == orjson.loads(value)
        else:
            assert item.value == value


def test_bad_import_lines_are_reported_by_number() -> None:
    good = '{"key": null, "key_encoding": "none", "value": {"name": "x"}, "headers": {}}'
    items, problems = read_import(
        [
            good,
            "",
            "{broken",
            '{"value": "%%%", "value_encoding": "base64"}',
            '{"value": 1, "headers": {"a": 1}}',
            "[]",
            '{"headers": {}}',
        ]
    )
    assert [item.line for item in items] == [1]
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "base64" in problems[1]


# --- the commands, against the real broker ------------------------------------------


@pytest.fixture
def seeded(kafka: KafkaSettings) -> KafkaSettings:
    """4 dead letters that a schema accepting text prices fixes, 2 that stay bad."""
    seed_dead_letters(kafka, [price_as_text(i) for i in range(4)] + [b"not json", None])
    return kafka


def test_ls_stats_and_show(seeded: KafkaSettings) -> None:
    stats = orjson.loads(dlq(seeded, "stats", "--json").stdout)
    assert stats["total"] == 6
    assert stats["by_stage"] == {"validate": 4, "parse": 2}
    assert stats["by_vertical"] == {"shop": 6}
    assert stats["oldest"] <= stats["newest"]

    listed = lines(dlq(seeded, "ls", "--json").stdout)
    assert len(listed) == 6
    assert sorted(item["stage"] for item in listed) == ["parse"] * 2 + ["validate"] * 4
    assert len(lines(dlq(seeded, "ls", "--json", "--limit", "2").stdout)) == 2
    only = lines(dlq(seeded, "ls", "--json", "--reason", "JSON").stdout)
    assert [item["reason"] for item in only] == ["not valid JSON"]
    by_header = lines(dlq(seeded, "ls", "--json", "--header", "qanat.event_id=e2").stdout)
    assert [item["key"] for item in by_header] == ["k2"]
    assert len(lines(dlq(seeded, "ls", "--json", "--ingestion-id", "ing-1").stdout)) == 3
    assert lines(dlq(seeded, "ls", "--json", "--vertical", "news").stdout) == []
    assert lines(dlq(seeded, "ls", "--json", "--since", "1h").stdout) != []
    assert lines(dlq(seeded, "ls", "--json", "--until", "1h").stdout) == []
    table = dlq(seeded, "ls")
    assert table.exit_code == 0 and "shop/product" in table.stdout

    first = listed[0]
    position = f"{first['partition']}:{first['offset']}"
    shown = orjson.loads(dlq(seeded, "show", position, "--json").stdout)
    assert shown["headers"]["qanat.error.stage"] == first["stage"]
    assert shown["key"] == first["key"] and shown["details"] is not None
    readable = dlq(seeded, "show", position).stdout
    assert "qanat.error.details" in readable
    # headers and details printed as JSON (double quotes), not as a Python dict
    assert '"qanat.error.stage": "' in readable and "'qanat.error.stage'" not in readable
    missing = dlq(seeded, "show", "0:999")
    assert missing.exit_code == 1 and "no dead letter" in missing.stderr


def test_export_edit_and_import(seeded: KafkaSettings, tmp_path: Path) -> None:
    exported = tmp_path / "dead.ndjson"
    result = dlq(seeded, "export", "--stage", "parse", "-o", str(exported))
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert sorted(row["value_encoding"] for row in rows) == ["base64", "none"]
    fixed = []
    for row in rows:  # the hand fix
        row |= {"value": {"name": "fixed", "source_id": row["key"]}, "value_encoding": "json"}
        fixed.append(orjson.dumps(row).decode())
    looping = dict(rows[0], headers={**rows[0]["headers"], "qanat.replay.count": "3"})
    edited = tmp_path / "edited.ndjson"
    edited.write_text("\n".join([*fixed, orjson.dumps(looping).decode(), "oops"]) + "\n")

    refused = dlq(seeded, "import", str(edited))
    assert refused.exit_code == 1 and "line 4: not JSON" in refused.stderr
    dry = orjson.loads(
        dlq(seeded, "import", str(edited), "--skip-bad", "--dry-run", "--json").stdout
    )
    assert (dry["would_pass"], dry["skipped_loop_guard"], dry["bad_lines"]) == (2, 1, 1)
    done = orjson.loads(dlq(seeded, "import", str(edited), "--skip-bad", "--json").stdout)
    assert (done["replayed"], done["skipped_loop_guard"], done["failed"]) == (2, 1, 0)

    landed = consume(seeded, seeded.topics.raw, 2, timeout=20, settle=0.5)
    assert len(landed) == 2
    for message in landed:
        assert orjson.loads(message.value or b"")["name"] == "fixed"
        assert message.headers["qanat.replay.count"] == "1"
        assert message.headers["qanat.replay.last_error"].startswith("parse: ")
        assert not any(name.startswith("qanat.error.") for name in message.headers)


def _errors_table(kafka: KafkaSettings, path: Path) -> None:
    """The errors sink's own SQLite store, filled from the DLQ topic."""
    from sinks.errors import ErrorsSinkSettings, error_row
    from sinks.sqlite.errors import SQLiteErrorsSink
    from sinks.sqlite.sink import SQLiteSinkSettings

    sink = SQLiteErrorsSink(SQLiteSinkSettings(path=path), ErrorsSinkSettings())
    sink.setup()
    with DlqScanner(kafka) as scanner:
        rows = [
            error_row(d.key, d.value, d.headers, kafka.topics.dlq, d.partition, d.offset)
            for d in scanner.scan(scanner.ranges(DlqFilter()))
        ]
    sink.store(rows)
    sink.close()


def _row_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM record_errors").fetchone()[0])


def test_purge_by_filter_then_older_than(seeded: KafkaSettings, tmp_path: Path) -> None:
    database = tmp_path / "qanat.db"
    _errors_table(seeded, database)
    assert _row_count(database) == 6
    env = {"QANAT_SQLITE_PATH": str(database)}

    assert dlq(seeded, "purge", "--yes").exit_code == 1  # nothing says what to purge
    asked = dlq(seeded, "purge", "--stage", "parse", "--store", "sqlite", env=env)
    assert asked.exit_code == 1 and "Purge 2 dead letter(s)?" in asked.output  # said no
    result = dlq(seeded, "purge", "--stage", "parse", "--store", "sqlite", "--yes", env=env)
    assert result.exit_code == 0, result.output
    summary = lines(result.stdout)[0]
    assert (summary["purged"], summary["deleted_rows"], summary["deleted_from_topic"]) == (2, 2, 0)
    assert _row_count(database) == 4
    assert orjson.loads(dlq(seeded, "stats", "--json").stdout)["total"] == 4
    dry = orjson.loads(dlq(seeded, "replay", "--dry-run", "--json").stdout)
    assert (dry["purged"], dry["would_pass"] + dry["would_fail"]) == (2, 4)

    result = dlq(seeded, "purge", "--before", "0s", "--store", "sqlite", "--yes", env=env)
    summary = lines(result.stdout)[0]
    assert (summary["purged"], summary["deleted_rows"], summary["deleted_from_topic"]) == (4, 4, 6)
    assert _row_count(database) == 0
    with DlqScanner(seeded) as scanner:  # the topic forgot them: log start = end
        for partition in scanner.partitions():
            tp = TopicPartition(seeded.topics.dlq, partition)
            low, high = scanner.consumer.get_watermark_offsets(tp, 10, cached=False)
            assert low == high
    assert dlq(seeded, "purge", "--all", "--yes").stdout.strip() == "nothing to purge"


def test_purge_deletes_rows_of_the_postgres_errors_table(
    kafka: KafkaSettings, postgres_dsn: str
) -> None:
    import psycopg

    from pipelines.dlq.purge import PostgresErrorRows
    from sinks.errors import ErrorsSinkSettings, error_row
    from sinks.postgres.errors import PostgresErrorsSink
    from sinks.postgres.settings import PostgresSinkSettings

    seed_dead_letters(kafka, [b"bad 1", b"bad 2", price_as_text(3)])
    table = f"errors_{uuid.uuid4().hex[:10]}"
    pg = PostgresSinkSettings(dsn=postgres_dsn)
    sink = PostgresErrorsSink(pg, ErrorsSinkSettings(table=table))
    sink.setup()
    with DlqScanner(kafka) as scanner:
        letters = list(scanner.scan(scanner.ranges(DlqFilter())))
    sink.store(
        [
            error_row(d.key, d.value, d.headers, kafka.topics.dlq, d.partition, d.offset)
            for d in letters
        ]
    )
    sink.close()
    env = {"QANAT_POSTGRES_DSN": postgres_dsn, "QANAT_ERRORS_TABLE": table}
    try:
        result = dlq(kafka, "purge", "--stage", "parse", "--store", "postgres", "-y", env=env)
        assert lines(result.stdout)[0]["deleted_rows"] == 2
        with psycopg.connect(postgres_dsn) as conn:
            left = conn.execute(f'SELECT stage FROM "{table}"').fetchall()
        assert left == [("validate",)]
        assert PostgresErrorRows(postgres_dsn, "public", table).delete(kafka.topics.dlq, []) == 0
    finally:
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_the_pacer_spaces_calls_and_says_how_long_it_would_wait() -> None:
    from pipelines.dlq.replay import Pacer

    pacer = Pacer(20)
    assert pacer.delay() == 0.0
    started = time.monotonic()
    for _ in range(5):
        pacer.wait()
    assert time.monotonic() - started >= 0.19  # 4 gaps of 1/20 s
    assert 0 < pacer.delay() <= 0.05
    assert Pacer(None).delay() == 0.0
