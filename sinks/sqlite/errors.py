"""The errors table in SQLite: by default in the same database file as the records.

``details`` and ``headers`` are JSON text, ``payload`` and ``raw_key`` BLOBs (the exact
bytes), times the record contract's fixed-width RFC 3339 text. One transaction per batch.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import orjson

from pipelines.core.records import format_time, now
from sinks.errors import COLUMNS, KEY_COLUMNS, ErrorRow, ErrorsSink, ErrorsSinkSettings
from sinks.errorstore import (
    COUNTS_SQL,
    ERRORS_SQL,
    TOTAL_SQL,
    check_page,
    counts_result,
    error_result,
)
from sinks.sqlite.conn import connect, create_in_database, read_table
from sinks.sqlite.sink import SQLiteSinkSettings, SQLiteStore
from sinks.sqlite.sqlquote import quote_identifier as _q

logger = logging.getLogger(__name__)

_TYPES = {
    "dlq_topic": "TEXT NOT NULL",
    "dlq_partition": "INTEGER NOT NULL",
    "dlq_offset": "INTEGER NOT NULL",
    "details": "TEXT",
    "payload": "BLOB",
    "raw_key": "BLOB",
    "headers": "TEXT NOT NULL",
    "replay_count": "INTEGER",
    "source_partition": "INTEGER",
    "source_offset": "INTEGER",
}


def ddl(table: str) -> list[str]:
    """The statements that create the errors ``table`` and its index, if missing."""
    columns = ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {_q(table)} ({columns}, stored_at TEXT NOT NULL, "
        f"PRIMARY KEY ({', '.join(KEY_COLUMNS)}))",
        f"CREATE INDEX IF NOT EXISTS {_q(table + '_ingestion_id')} "
        f"ON {_q(table)} (ingestion_id, error_at)",
    ]


def insert_sql(table: str) -> str:
    """One row per DLQ position: a redelivered dead letter changes nothing."""
    names = (*COLUMNS, "stored_at")
    return (
        f"INSERT INTO {_q(table)} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO NOTHING"
    )


def create_tables(conn: sqlite3.Connection, table: str) -> None:
    """Create the errors ``table`` and its index; FatalError on failure."""
    create_in_database(conn, table, ddl(table))


def init_db(settings: SQLiteSinkSettings, errors: ErrorsSinkSettings | None = None) -> None:
    """Create the errors table and its index (``qanat db init``); idempotent."""
    conn = connect(settings)
    try:
        create_tables(conn, (errors or ErrorsSinkSettings()).table)
    finally:
        conn.close()


def _time(value: Any) -> str | None:
    return None if value is None else format_time(value)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _params(row: ErrorRow, stored_at: str) -> tuple[Any, ...]:
    values = dict(zip(COLUMNS, row.values(), strict=True))
    values |= {name: _time(values[name]) for name in ("received_at", "error_at")}
    values |= {name: _json(values[name]) for name in ("details", "headers")}
    return (*values.values(), stored_at)


class SQLiteErrorsSink(SQLiteStore, ErrorsSink):
    """Stores dead letters in a SQLite table (default ``record_errors``), one row each.

    >>> import tempfile, pathlib
    >>> db = pathlib.Path(tempfile.mkdtemp()) / "qanat.db"
    >>> sink = SQLiteErrorsSink(SQLiteSinkSettings(path=db))
    >>> sink.setup()
    >>> headers = [("qanat.ingestion_id", b"ing-1"), ("qanat.event_id", b"ev-1"),
    ...            ("qanat.error.stage", b"validate"), ("qanat.error.reason", b"bad price"),
    ...            ("qanat.error.details", b'[{"path": "$.price", "message": "not a number"}]')]
    >>> sink.add(b'{"price": "x"}', b"shop/product/p1", 0, headers, "qanat.dlq", 0, 7)
    >>> sink.flush()  # one transaction; SinkBackpressureError if it must be retried
    >>> sink.close()
    >>> store = SQLiteErrorStore(SQLiteSinkSettings(path=db))
    >>> store.counts("ing-1")
    {'ingestion_id': 'ing-1', 'invalid': 1, 'dead_letters': 1, 'by_stage': {'validate': 1}}
    >>> [(e["stage"], e["details"][0]["path"], e["payload"]) for e in store.errors("ing-1")]
    [('validate', '$.price', '{"price": "x"}')]
    """

    _label = "errors sink"

    def __init__(
        self,
        settings: SQLiteSinkSettings | None = None,
        errors: ErrorsSinkSettings | None = None,
        **quix_options: Any,
    ) -> None:
        super().__init__(settings, (errors or ErrorsSinkSettings()).table, **quix_options)
        self._sql = insert_sql(self.table)

    def _ddl(self) -> list[str]:
        return ddl(self.table)

    def store(self, rows: list[ErrorRow]) -> None:
        self._execute_many(self._sql, [_params(row, now()) for row in rows])


class SQLiteErrorStore:
    """Reads the errors table (:class:`sinks.errorstore.ErrorStore`); a connection per call.

    Before the table exists (no errors sink ran yet) every ingestion has no errors.
    """

    def __init__(
        self, settings: SQLiteSinkSettings | None = None, errors: ErrorsSinkSettings | None = None
    ) -> None:
        self.settings = settings or SQLiteSinkSettings()
        self.table = (errors or ErrorsSinkSettings()).table
        q = {"table": _q(self.table), "p": "?"}
        self._counts_sql, self._total_sql = COUNTS_SQL.format(**q), TOTAL_SQL.format(**q)
        self._errors_sql = ERRORS_SQL.format(**q)

    def _query(self, query: str, params: tuple[Any, ...]) -> list[sqlite3.Row] | None:
        """The rows, or None when there is no table yet."""
        return read_table(self.settings, self.table, query, params)

    def counts(self, ingestion_id: str) -> dict[str, Any]:
        total = self._query(self._total_sql, (ingestion_id,))
        by_stage = self._query(self._counts_sql, (ingestion_id,)) or []
        return counts_result(ingestion_id, total[0] if total else None, by_stage)

    def errors(self, ingestion_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        check_page(limit, offset)
        rows = self._query(self._errors_sql, (ingestion_id, limit, offset)) or []
        results = []
        for row in rows:
            values = dict(row)
            details = values["details"]
            values["details"] = orjson.loads(details) if details is not None else None
            results.append(error_result(ingestion_id, values))
        return results

    def close(self) -> None:
        return None
