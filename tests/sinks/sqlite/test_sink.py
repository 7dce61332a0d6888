"""The SQLite sink passes the conformance suite, plus SQLite's own details."""

from __future__ import annotations

import doctest
import importlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pipelines.core.errors import FatalError, RetriableError
from sinks.base import BadRowError, UpsertSink
from sinks.sqlite.conn import classify, create_in_database, write_transaction
from sinks.sqlite.reader import SQLiteRecordReader
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings, init_db
from tests.sinks.conformance import (
    Key,
    ListDeadLetters,
    MakeSink,
    SinkConformance,
    deliver,
    record,
)


def settings_at(tmp_path: Path, **overrides: Any) -> SQLiteSinkSettings:
    return SQLiteSinkSettings(path=tmp_path / "db" / "qanat.db", **overrides)


class TestSQLiteSink(SinkConformance):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(dead_letters: ListDeadLetters) -> UpsertSink:
            settings = settings_at(tmp_path, busy_timeout_ms=50)
            return SQLiteSink(settings, dead_letters=dead_letters)

        return make

    def read_rows(self, sink: UpsertSink) -> dict[Key, dict[str, Any]]:
        assert isinstance(sink, SQLiteSink)
        with sqlite3.connect(sink.settings.path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(f'SELECT * FROM "{sink.settings.table}"').fetchall()
        result = {}
        for row in rows:
            values = dict(row)
            values["data"] = orjson.loads(values["data"])
            result[(row["vertical"], row["type"], row["source_id"])] = values
        return result

    def rejected_value(self) -> dict[str, Any]:
        # SQLite stores almost anything (NUL bytes included), so the table has CHECK
        # constraints of its own: event_time must be the contract's fixed-width text,
        # which is what makes text order time order. SQLite raises SQLITE_CONSTRAINT_CHECK.
        return record("bad", event_time="yesterday")

    def handled(self, sink: UpsertSink, ingestion_id: str = "ing-1") -> int:
        assert isinstance(sink, SQLiteSink)
        return SQLiteRecordReader(sink.settings).handled_ingestion(ingestion_id)

    @contextmanager
    def retriable_failure(self, sink: UpsertSink) -> Iterator[None]:
        # Another connection holds the write lock longer than the sink's busy timeout.
        assert isinstance(sink, SQLiteSink)
        other = sqlite3.connect(sink.settings.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_wal_mode_and_schema(tmp_path: Path) -> None:
    settings = settings_at(tmp_path, table="items")
    init_db(settings)
    init_db(settings)  # idempotent
    with sqlite3.connect(settings.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [row[1] for row in conn.execute('PRAGMA table_info("items")')]
        primary = [row[1] for row in conn.execute('PRAGMA table_info("items")') if row[5]]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM items WHERE ingestion_id = ?", ["i"]
        ).fetchall()
    assert "items_ingestion_id" in str(plan)  # an ingestion's status is no full scan
    assert columns[-1] == "updated_at" and "data" in columns and "kafka_offset" in columns
    assert primary == ["vertical", "type", "source_id"]


def test_sink_without_create_tables_needs_init_db(tmp_path: Path) -> None:
    settings = settings_at(tmp_path, create_tables=False)
    init_db(settings)
    sink = SQLiteSink(settings, dead_letters=ListDeadLetters())
    sink.setup()
    deliver(sink, (0, record()))
    sink.close()
    with sqlite3.connect(settings.path) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (1,)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QANAT_SQLITE_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("QANAT_SQLITE_TABLE", "things")
    settings = SQLiteSinkSettings()
    assert (settings.path, settings.table) == (tmp_path / "x.db", "things")
    assert all(f.description for f in SQLiteSinkSettings.model_fields.values())


@pytest.mark.parametrize("table", ['records"; DROP TABLE x; --', "1abc", "", "a" * 64])
def test_table_must_be_an_identifier(table: str) -> None:
    with pytest.raises(ValidationError):
        SQLiteSinkSettings(table=table)


def test_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # SQLITE_BUSY
    locked = sqlite3.OperationalError("whatever the text")
    locked.sqlite_errorcode = 262  # SQLITE_LOCKED_SHAREDCACHE: primary code 6
    readonly = sqlite3.OperationalError("database is locked")  # the text does not matter
    readonly.sqlite_errorcode = 8  # SQLITE_READONLY
    assert isinstance(classify(busy), RetriableError)
    assert isinstance(classify(locked), RetriableError)
    assert isinstance(classify(readonly), FatalError)
    assert isinstance(classify(sqlite3.IntegrityError("x")), BadRowError)


def test_unwritable_path_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = SQLiteSink(SQLiteSinkSettings(path=blocker / "qanat.db"))
    with pytest.raises(FatalError, match="cannot open SQLite database"):
        sink.setup()


def test_a_write_transaction_keeps_nothing_of_a_failed_block(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    create_in_database(conn, "t", ["CREATE TABLE t (n INTEGER)"])
    with pytest.raises(KeyError), write_transaction(conn):  # any exception: rolled back
        conn.execute("INSERT INTO t VALUES (1)")
        raise KeyError("x")
    with pytest.raises(FatalError), write_transaction(conn):  # a sqlite3 error: classified
        conn.execute("INSERT INTO nowhere VALUES (1)")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    assert not conn.in_transaction
    with pytest.raises(FatalError, match="cannot create table 't'"):
        create_in_database(conn, "t", ["CREATE TABLE t (n INTEGER)"])  # exists: refused


@pytest.mark.parametrize("name", ["conn", "progress", "sqlquote", "sink", "ingestions", "reader"])
def test_doctests(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert doctest.testmod(importlib.import_module(f"sinks.sqlite.{name}")).failed == 0
