"""The errors table in PostgreSQL (``[postgres]`` extra): one ``executemany`` per batch.

``details`` and ``headers`` are jsonb, ``payload`` and ``raw_key`` bytea (the exact bytes),
times timestamptz. Errors are classified by SQLSTATE with :func:`sinks.postgres.conn.classify`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.core.records import format_time
from sinks.errors import COLUMNS, KEY_COLUMNS, ErrorRow, ErrorsSink, ErrorsSinkSettings
from sinks.errorstore import (
    COUNTS_SQL,
    ERRORS_SQL,
    TOTAL_SQL,
    check_page,
    counts_result,
    error_result,
)
from sinks.postgres.conn import Pool, TableReader, connect, create_in_schema, open_checked_pool
from sinks.postgres.settings import PostgresSinkSettings
from sinks.postgres.sink import PostgresStore

logger = logging.getLogger(__name__)

_TYPES = {
    "dlq_topic": "text NOT NULL",
    "dlq_partition": "integer NOT NULL",
    "dlq_offset": "bigint NOT NULL",
    "details": "jsonb",
    "payload": "bytea",
    "raw_key": "bytea",
    "headers": "jsonb NOT NULL",
    "received_at": "timestamptz",
    "error_at": "timestamptz",
    "replay_count": "integer",
    "source_partition": "integer",
    "source_offset": "bigint",
}
_JSON_COLUMNS = frozenset({"details", "headers"})


def _table(settings: PostgresSinkSettings, errors: ErrorsSinkSettings) -> sql.Identifier:
    return sql.Identifier(settings.schema_name, errors.table)


def ddl(settings: PostgresSinkSettings, errors: ErrorsSinkSettings) -> list[sql.Composed]:
    """The statements that create the errors table and its index, if missing."""
    table = _table(settings, errors)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_TYPES.get(c, "text"))) for c in COLUMNS
    )
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, stored_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY ({}))"
        ).format(table, columns, sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS))),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (ingestion_id, error_at)").format(
            sql.Identifier(f"{errors.table}_ingestion_id"[:63]), table
        ),
    ]


def create_tables(
    conn: psycopg.Connection[Any], settings: PostgresSinkSettings, errors: ErrorsSinkSettings
) -> None:
    """Create the schema (if missing), the errors table and index; safe with replicas."""
    create_in_schema(conn, settings, errors.table, ddl(settings, errors))


def init_db(settings: PostgresSinkSettings, errors: ErrorsSinkSettings | None = None) -> None:
    """Create the schema, errors table and index (``qanat db init postgres``); idempotent."""
    with connect(settings) as conn:
        create_tables(conn, settings, errors or ErrorsSinkSettings())


def insert_sql(settings: PostgresSinkSettings, errors: ErrorsSinkSettings) -> sql.Composed:
    """One row per DLQ position: a redelivered dead letter changes nothing."""
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING").format(
        _table(settings, errors),
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS)),
    )


def _params(row: ErrorRow) -> tuple[Any, ...]:
    return tuple(
        Jsonb(value, dumps=orjson.dumps) if name in _JSON_COLUMNS and value is not None else value
        for name, value in zip(COLUMNS, row.values(), strict=True)
    )


class PostgresErrorsSink(PostgresStore, ErrorsSink):
    """Stores dead letters in a PostgreSQL table (default ``record_errors``), one row each.

    Example (with a server from ``scripts/postgres-local.sh``)::

        from sinks.postgres.errors import PostgresErrorsSink, PostgresErrorStore
        from sinks.postgres.settings import PostgresSinkSettings

        settings = PostgresSinkSettings(
            dsn="postgresql://qanat:qanat@127.0.0.1:5432/qanat_test")
        sink = PostgresErrorsSink(settings)
        sink.setup()  # connects, creates the table
        headers = [("qanat.ingestion_id", b"ing-1"), ("qanat.error.stage", b"parse")]
        sink.add(b"not json", None, 0, headers, "qanat.dlq", 0, 7)
        sink.flush()  # one transaction; SinkBackpressureError if it must be retried
        sink.close()
        PostgresErrorStore(settings).counts("ing-1")["by_stage"]  # {'parse': 1}
    """

    _label = "errors sink"

    def __init__(
        self,
        settings: PostgresSinkSettings,
        errors: ErrorsSinkSettings | None = None,
        **quix_options: Any,
    ) -> None:
        self.errors = errors or ErrorsSinkSettings()
        super().__init__(settings, self.errors.table, **quix_options)
        self._sql = insert_sql(settings, self.errors)

    def _ddl(self) -> list[sql.Composed]:
        return ddl(self.settings, self.errors)

    def _open_pool(self) -> Pool:
        s = self.settings
        return open_checked_pool(s, 1, 1, f"qanat-errors-{s.schema_name}.{self.errors.table}")

    def store(self, rows: list[ErrorRow]) -> None:
        self._execute_many(self._sql, [_params(row) for row in rows])


class PostgresErrorStore:
    """Reads the errors table (:class:`sinks.errorstore.ErrorStore`) through a small pool.

    Before the table exists every ingestion has no errors. Call :meth:`close` at shutdown.
    """

    def __init__(
        self, settings: PostgresSinkSettings, errors: ErrorsSinkSettings | None = None
    ) -> None:
        self.settings = settings
        self.errors_settings = errors or ErrorsSinkSettings()
        table = _table(settings, self.errors_settings)
        self._regclass = table.as_string()
        q = {"table": table, "p": sql.Placeholder()}
        self._counts_sql = sql.SQL(COUNTS_SQL).format(**q)
        self._total_sql = sql.SQL(TOTAL_SQL).format(**q)
        self._errors_sql = sql.SQL(ERRORS_SQL).format(**q)
        self._reader = TableReader(
            self.settings, self._regclass, f"qanat-errors-reader-{self.errors_settings.table}"
        )

    def _query(self, query: sql.Composed, params: list[Any]) -> list[dict[str, Any]] | None:
        """The rows, or None when there is no table yet."""
        rows = self._reader.rows(query, params)
        return None if rows is None else rows

    def counts(self, ingestion_id: str) -> dict[str, Any]:
        total = self._query(self._total_sql, [ingestion_id])
        by_stage = self._query(self._counts_sql, [ingestion_id]) or []
        return counts_result(
            ingestion_id,
            tuple(total[0].values()) if total else None,
            [tuple(row.values()) for row in by_stage],
        )

    def errors(self, ingestion_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        check_page(limit, offset)
        rows = self._query(self._errors_sql, [ingestion_id, limit, offset]) or []
        results = []
        for row in rows:
            for name in ("received_at", "error_at", "stored_at"):
                row[name] = format_time(row[name]) if row[name] is not None else None
            results.append(error_result(ingestion_id, row))
        return results

    def close(self) -> None:
        self._reader.close()
