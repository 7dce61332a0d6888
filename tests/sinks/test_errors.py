"""The errors sink and its reader: a contract every store passes, and SQLite's own details.

The sink is driven the way Quix Streams drives it (``setup``, ``add``, ``flush``), so no
Kafka is needed here; tests/sinks/test_errors_kafka.py runs it in a real application.
"""

from __future__ import annotations

import doctest
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from quixstreams.sinks import SinkBackpressureError
from typer.testing import CliRunner

import sinks.errors
import sinks.errorstore
import sinks.sqlite.errors
from pipelines.cli.main import app
from pipelines.core.deadletter import dead_letter_headers
from pipelines.core.topics import Headers, encode_headers
from sinks.errors import ErrorsSink, ErrorsSinkSettings
from sinks.errorstore import ErrorStore
from sinks.sqlite.errors import SQLiteErrorsSink, SQLiteErrorStore, init_db
from sinks.sqlite.sink import SQLiteSinkSettings

DLQ = "qanat.dlq"
T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:00:01.000000Z"
DETAILS = [{"path": "$.price", "message": "'x' is not of type 'number'", "validator": "type"}]


def letter_headers(
    ingestion_id: str = "ing-1",
    event_id: str | None = "ev-1",
    stage: str = "validate",
    replay_count: int = 2,
    offset: int = 41,
) -> Headers:
    """The headers of a dead letter as a stage writes them (pipelines.core.deadletter)."""
    contract = {
        "qanat.vertical": "shop",
        "qanat.type": "product",
        "qanat.source": "http",
        "qanat.ingestion_id": ingestion_id,
        "qanat.received_at": T0,
        "content-type": "application/json",
    }
    if event_id is not None:
        contract["qanat.event_id"] = event_id
    original = [*encode_headers(contract), ("qanat.replay.count", str(replay_count).encode())]
    return dead_letter_headers(
        original,
        stage=stage,
        reason=f"{stage} failed",
        details=DETAILS,
        topic="qanat.raw",
        partition=1,
        offset=offset,
    )


def deliver(
    sink: ErrorsSink, *items: tuple[int, bytes | None, bytes | None, Headers | None]
) -> None:
    """Add ``(dlq offset, key, value, headers)`` items as one batch of partition 0; flush."""
    for offset, key, value, headers in items:
        sink.add(value, key, 1_767_225_600_000, headers, DLQ, 0, offset)
    sink.flush()


class ErrorsSinkContract:
    """Subclass with ``make_sink`` / ``make_store`` fixtures and the two methods below."""

    def read_rows(self, sink: ErrorsSink) -> list[dict[str, Any]]:
        """Every stored row, ordered by DLQ offset: JSON parsed, times as contract text."""
        raise NotImplementedError

    def retriable_failure(self, sink: ErrorsSink) -> AbstractContextManager[None]:
        """While entered, the sink's writes fail with a temporary database error."""
        raise NotImplementedError

    @pytest.fixture
    def sink(self, make_sink: Callable[[], ErrorsSink]) -> Iterator[ErrorsSink]:
        sink = make_sink()
        sink.setup()
        yield sink
        sink.close()

    @pytest.fixture
    def store(self, make_store: Callable[[], ErrorStore]) -> Iterator[ErrorStore]:
        store = make_store()
        yield store
        store.close()

    def test_every_field_lands(self, sink: ErrorsSink) -> None:
        headers = letter_headers()
        value = '{"name": "Lämp 🚀", "price": "x"}'.encode()
        deliver(sink, (7, b"shop/product/p1", value, headers))
        [row] = self.read_rows(sink)
        stored_at = row.pop("stored_at")
        assert isinstance(stored_at, str) and stored_at.endswith("Z")
        sent = {name: text.decode() for name, text in headers}
        assert row == {
            "dlq_topic": DLQ,
            "dlq_partition": 0,
            "dlq_offset": 7,
            "ingestion_id": "ing-1",
            "event_id": "ev-1",
            "vertical": "shop",
            "type": "product",
            "source": "http",
            "stage": "validate",
            "reason": "validate failed",
            "details": DETAILS,
            "payload": value,
            "raw_key": b"shop/product/p1",
            "headers": sent,
            "received_at": T0,
            "error_at": sent["qanat.error.at"],
            "replay_count": 2,
            "source_topic": "qanat.raw",
            "source_partition": 1,
            "source_offset": 41,
        }

    def test_same_dlq_offset_twice_makes_one_row(self, sink: ErrorsSink) -> None:
        item = (3, b"k", b"{}", letter_headers())
        deliver(sink, item, item)  # twice in one batch
        first = self.read_rows(sink)
        deliver(sink, item)  # redelivered after a crash before the offset commit
        assert self.read_rows(sink) == first  # stored_at too: the row was not touched
        assert [row["dlq_offset"] for row in first] == [3]

    def test_poison_message_lands_with_nulls_and_exact_bytes(
        self, sink: ErrorsSink, store: ErrorStore
    ) -> None:
        raw = b"\xff\xfe\x00not utf-8 \x80"
        deliver(sink, (0, None, raw, None), (1, b"\xc3", None, []), (2, b"", b"", None))
        rows = self.read_rows(sink)
        assert [(r["raw_key"], r["payload"]) for r in rows] == [
            (None, raw),
            (b"\xc3", None),
            (b"", b""),
        ]
        nullable = set(rows[0]) - {"dlq_topic", "dlq_partition", "dlq_offset", "payload"}
        nullable -= {"raw_key", "headers", "stored_at"}
        assert all(row[name] is None for row in rows for name in nullable)
        assert [row["headers"] for row in rows] == [{}, {}, {}]

    def test_unreadable_headers_are_null_and_kept(self, sink: ErrorsSink) -> None:
        headers = [
            ("qanat.ingestion_id", b"ing-\x00-\xff"),
            ("qanat.received_at", b"yesterday"),
            ("qanat.error.at", b"9999-99-99"),
            ("qanat.error.details", b"not json \x00"),
            ("qanat.error.partition", b"-1"),
            ("qanat.error.offset", b"99999999999999999999999"),
            ("qanat.replay.count", b"two"),
        ]
        deliver(sink, (0, None, b"x", headers))
        [row] = self.read_rows(sink)
        assert row["ingestion_id"] == "ing-\ufffd-\ufffd"
        assert row["details"] == "not json \ufffd"  # kept, as a JSON string
        for name in ("received_at", "error_at", "source_partition", "source_offset"):
            assert row[name] is None
        assert row["replay_count"] is None
        assert row["headers"]["qanat.received_at"] == "yesterday"
        assert row["headers"]["qanat.error.offset"] == "99999999999999999999999"

    def test_counts_and_errors_per_ingestion(self, sink: ErrorsSink, store: ErrorStore) -> None:
        deliver(
            sink,
            (0, b"a", b'{"a": 1}', letter_headers("ing-A", "ev-1", "parse", 0)),
            (1, b"b", b"\xff", letter_headers("ing-A", "ev-2", "validate", 0)),
            (2, None, b"c", letter_headers("ing-B", "ev-9", "sink", 0)),
            # ev-1 replayed, failing again at another stage: one invalid event, two letters
            (3, b"a", b'{"a": 1}', letter_headers("ing-A", "ev-1", "validate", 1)),
            (4, None, b"n1", letter_headers("ing-A", None, "parse", 0)),
            (5, None, b"n2", letter_headers("ing-A", None, "parse", 0)),
        )
        assert store.counts("ing-A") == {
            "ingestion_id": "ing-A",
            "invalid": 4,  # ev-1, ev-2 and two letters without an event id
            "dead_letters": 5,
            "by_stage": {"parse": 3, "validate": 2},
        }
        assert store.counts("ing-B")["by_stage"] == {"sink": 1}
        assert store.counts("nope") == {
            "ingestion_id": "nope",
            "invalid": 0,
            "dead_letters": 0,
            "by_stage": {},
        }
        errors = store.errors("ing-A")
        assert [e["dlq_offset"] for e in errors] == [0, 1, 3, 4, 5]  # by error time
        first = errors[0]
        assert set(first) == set(sinks.errorstore.ERROR_FIELDS)
        assert (first["stage"], first["reason"], first["details"]) == (
            "parse",
            "parse failed",
            DETAILS,
        )
        assert (first["payload"], first["payload_encoding"]) == ('{"a": 1}', "utf-8")
        assert (first["key"], first["key_encoding"]) == ("a", "utf-8")
        assert (first["event_id"], first["received_at"], first["replay_count"]) == ("ev-1", T0, 0)
        assert first["error_at"].endswith("Z") and first["stored_at"].endswith("Z")
        assert (first["source_topic"], first["source_partition"]) == ("qanat.raw", 1)
        assert (errors[1]["payload"], errors[1]["payload_encoding"]) == ("/w==", "base64")
        assert (errors[3]["key"], errors[3]["key_encoding"]) == (None, None)
        page = store.errors("ing-A", limit=2, offset=2)
        assert [e["dlq_offset"] for e in page] == [3, 4]
        with pytest.raises(ValueError):
            store.errors("ing-A", limit=-1)

    def test_reader_before_the_table_exists(self, make_store: Callable[[], ErrorStore]) -> None:
        store = make_store()
        try:
            assert store.counts("ing-1")["invalid"] == 0
            assert store.errors("ing-1") == []
        finally:
            store.close()

    def test_retriable_error_backpressures_then_succeeds(self, sink: ErrorsSink) -> None:
        deliver(sink, (0, None, b"a", letter_headers()))
        with self.retriable_failure(sink), pytest.raises(SinkBackpressureError) as raised:
            deliver(sink, (1, None, b"b", letter_headers()), (2, None, b"c", None))
        assert raised.value.retry_after > 0
        assert [row["dlq_offset"] for row in self.read_rows(sink)] == [0]
        deliver(sink, (1, None, b"b", letter_headers()), (2, None, b"c", None))  # redelivered
        assert [row["dlq_offset"] for row in self.read_rows(sink)] == [0, 1, 2]


# --- SQLite ---------------------------------------------------------------------------


class TestSQLiteErrorsSink(ErrorsSinkContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> SQLiteSinkSettings:
        return SQLiteSinkSettings(path=tmp_path / "db" / "qanat.db", busy_timeout_ms=50)

    @pytest.fixture
    def make_sink(self, settings: SQLiteSinkSettings) -> Callable[[], ErrorsSink]:
        return lambda: SQLiteErrorsSink(settings)

    @pytest.fixture
    def make_store(self, settings: SQLiteSinkSettings) -> Callable[[], ErrorStore]:
        return lambda: SQLiteErrorStore(settings)

    def read_rows(self, sink: ErrorsSink) -> list[dict[str, Any]]:
        assert isinstance(sink, SQLiteErrorsSink)
        with sqlite3.connect(sink.settings.path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(f'SELECT * FROM "{sink.table}" ORDER BY dlq_offset').fetchall()
        result = []
        for row in rows:
            values = dict(row)
            for name in ("details", "headers"):
                values[name] = orjson.loads(values[name]) if values[name] is not None else None
            result.append(values)
        return result

    @contextmanager
    def retriable_failure(self, sink: ErrorsSink) -> Iterator[None]:
        # Another connection holds the write lock longer than the sink's busy timeout.
        assert isinstance(sink, SQLiteErrorsSink)
        other = sqlite3.connect(sink.settings.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_sqlite_schema_shares_the_records_database(tmp_path: Path) -> None:
    settings = SQLiteSinkSettings(path=tmp_path / "qanat.db")
    init_db(settings)
    init_db(settings, ErrorsSinkSettings())  # idempotent
    with sqlite3.connect(settings.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        info = conn.execute('PRAGMA table_info("record_errors")').fetchall()
        indexes = conn.execute('PRAGMA index_list("record_errors")').fetchall()
        indexed = conn.execute('PRAGMA index_info("record_errors_ingestion_id")').fetchall()
    types = {row[1]: row[2] for row in info}
    assert (types["payload"], types["raw_key"], types["details"]) == ("BLOB", "BLOB", "TEXT")
    assert [row[1] for row in info if row[5]] == ["dlq_topic", "dlq_partition", "dlq_offset"]
    assert "record_errors_ingestion_id" in [row[1] for row in indexes]
    assert indexed[0][2] == "ingestion_id"


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ErrorsSinkSettings().table == "record_errors"
    monkeypatch.setenv("QANAT_ERRORS_TABLE", "dead_letters")
    assert ErrorsSinkSettings().table == "dead_letters"
    assert all(f.description for f in ErrorsSinkSettings.model_fields.values())
    with pytest.raises(ValidationError):
        ErrorsSinkSettings(table='x"; DROP TABLE records; --')


def test_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for module in (sinks.errors, sinks.errorstore, sinks.sqlite.errors):
        assert doctest.testmod(module).failed == 0


def test_cli_refuses_an_unknown_store() -> None:
    result = CliRunner().invoke(app, ["sink", "errors", "mongodb"])
    assert result.exit_code == 1
    assert "unknown store 'mongodb'" in result.output
