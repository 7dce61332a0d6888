"""The walking skeleton, end to end on the real broker, SQLite and PostgreSQL.

HTTP source -> raw topic -> transform -> records topic -> SQLite sink + PostgreSQL sink,
and invalid records -> DLQ with their original bytes and the error headers.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from tests.kafka_helpers import consume
from tests.services import Services

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "required": ["price"],
    "properties": {"price": {"type": "number", "minimum": 0}},
}
VALID = [
    {"name": "Lamp", "source_id": "p1", "price": 30, "colour": "red"},
    {
        "name": "Chair",
        "source_id": "p2",
        "price": 55.5,
        "vertical_data": {"legs": 4},
        "event_time": "2026-05-01T12:00:00Z",
    },
    {"title": "Desk", "idempotency_key": "k-3", "price": 120, "body": "oak"},
    {"name": "Stool (no id)", "price": 9},
]
INVALID = [
    {"name": "Negative", "source_id": "p9", "price": -1},
    {"source_id": "p10", "price": 1},
    5,
]
Row = tuple[str, str, str, str, dict[str, Any], str, str]


def _sqlite_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(
                "SELECT vertical, type, source_id, name, data, source, "
                "ingestion_id FROM records ORDER BY source_id"
            ).fetchall()
        except sqlite3.OperationalError:  # the sink has not created the table yet
            return []
    return [(*row[:4], orjson.loads(row[4]), row[5], row[6]) for row in rows]


def _postgres_rows(dsn: str, table: str) -> list[Row]:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not exists or exists[0] is None:
            return []
        query = sql.SQL(
            "SELECT vertical, type, source_id, name, data, source, ingestion_id "
            "FROM {} ORDER BY source_id"
        ).format(sql.Identifier(table))
        rows = conn.execute(query).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _wait_for(
    what: str, check: Callable[[], bool], services: Services, timeout: float = 90.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        services.check_alive()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{services.log_tails()}")


def test_http_to_sqlite_and_postgres_with_dead_letters(
    services: Services, kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    prefix = f"skel{uuid.uuid4().hex[:10]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    schema_dir = tmp_path / "schemas" / "shop"
    schema_dir.mkdir(parents=True)
    (schema_dir / "product.json").write_bytes(orjson.dumps(SCHEMA))
    sqlite_path = tmp_path / "qanat.db"
    table = f"records_{uuid.uuid4().hex[:10]}"
    port = free_port()
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "QANAT_KAFKA_TOPIC_PREFIX": prefix,
            "QANAT_KAFKA_PARTITIONS": "2",
            "QANAT_HTTP_PORT": str(port),
            "QANAT_HTTP_AUTH": "none",
            "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "schemas"),
            "QANAT_SQLITE_PATH": str(sqlite_path),
            "QANAT_POSTGRES_DSN": postgres_dsn,
            "QANAT_POSTGRES_TABLE": table,
        }
    )
    services.start("source-http", "source", "http")
    services.start("transform", "transform")
    services.start("sink-sqlite", "sink", "sqlite")
    services.start("sink-postgres", "sink", "postgres")
    base = f"http://127.0.0.1:{port}"
    services.wait_http(f"{base}/healthz")

    batch = {"records": VALID + INVALID}
    url = f"{base}/api/v1/ingest/shop/product/batch"
    first = httpx.post(url, json=batch, timeout=30)
    assert first.status_code == 202, first.text
    assert first.json()["record_count"] == len(VALID) + len(INVALID)
    first_id = first.json()["ingestion_id"]

    def stored(rows_of: Callable[[], list[Row]], ingestion_id: str) -> Callable[[], bool]:
        def check() -> bool:
            rows = rows_of()
            return len(rows) == len(VALID) and all(row[6] == ingestion_id for row in rows)

        return check

    sqlite_rows = lambda: _sqlite_rows(sqlite_path)  # noqa: E731
    postgres_rows = lambda: _postgres_rows(postgres_dsn, table)  # noqa: E731
    _wait_for("rows in SQLite", stored(sqlite_rows, first_id), services)
    _wait_for("rows in PostgreSQL", stored(postgres_rows, first_id), services)

    for rows in (sqlite_rows(), postgres_rows()):
        by_name = {row[3]: row for row in rows}
        assert set(by_name) == {"Lamp", "Chair", "Desk", "Stool (no id)"}
        assert by_name["Lamp"][:3] == ("shop", "product", "p1")
        assert by_name["Lamp"][4] == {"price": 30, "colour": "red"}
        assert by_name["Chair"][4] == {
            "price": 55.5,
            "legs": 4,
            "event_time": "2026-05-01T12:00:00Z",
        }
        assert by_name["Desk"][2] == "k-3"
        assert by_name["Desk"][4] == {"price": 120, "body": "oak"}
        assert by_name["Stool (no id)"][2].startswith("sha256:")
        assert {row[5] for row in rows} == {"http"}

    dead = consume(kafka, kafka.topics.dlq, expected=len(INVALID))
    assert len(dead) == len(INVALID)
    by_bytes = {letter.value: letter for letter in dead}
    assert set(by_bytes) == {orjson.dumps(record) for record in INVALID}
    negative = by_bytes[orjson.dumps(INVALID[0])]
    assert negative.key == b"shop/product/p9"
    assert negative.headers["qanat.error.stage"] == "validate"
    assert orjson.loads(negative.headers["qanat.error.details"])[0]["path"] == "$.price"
    assert negative.headers["qanat.error.topic"] == kafka.topics.raw
    assert negative.headers["qanat.ingestion_id"] == first_id
    for letter in dead:
        for header in (
            "qanat.error.reason",
            "qanat.error.at",
            "qanat.error.partition",
            "qanat.error.offset",
            "qanat.replay.count",
            "qanat.event_id",
        ):
            assert letter.headers[header], header
    assert by_bytes[orjson.dumps(INVALID[1])].headers["qanat.error.stage"] == "normalize"
    assert by_bytes[b"5"].headers["qanat.error.stage"] == "validate"

    # The same batch again: every row is updated in place, none is added.
    second = httpx.post(url, json=batch, timeout=30)
    assert second.status_code == 202
    second_id = second.json()["ingestion_id"]
    _wait_for("the re-sent batch in SQLite", stored(sqlite_rows, second_id), services)
    _wait_for("the re-sent batch in PostgreSQL", stored(postgres_rows, second_id), services)
    assert len(sqlite_rows()) == len(postgres_rows()) == len(VALID)
    services.check_alive()
