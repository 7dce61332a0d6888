"""The ingestions table in PostgreSQL (``[postgres]`` extra); see :mod:`sinks.ingestions`."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from sinks.errors import ErrorsSinkSettings
from sinks.ingestions import FIELDS, IngestionsSink
from sinks.postgres.conn import Pool, TableReader, open_checked_pool
from sinks.postgres.settings import PostgresSinkSettings
from sinks.postgres.sink import PostgresStore


def _table(settings: PostgresSinkSettings, errors: ErrorsSinkSettings) -> sql.Identifier:
    return sql.Identifier(settings.schema_name, errors.ingestions_table)


def ddl(settings: PostgresSinkSettings, errors: ErrorsSinkSettings) -> list[sql.Composed]:
    """The statement that creates the ingestions table, if missing."""
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (ingestion_id text PRIMARY KEY, vertical text, "
            "type text, source text, accepted bigint NOT NULL, received_at text)"
        ).format(_table(settings, errors))
    ]


class PostgresIngestionsSink(PostgresStore, IngestionsSink):
    """Stores ingestion summaries in PostgreSQL (default table ``ingestions``)."""

    _label = "ingestions sink"

    def __init__(
        self,
        settings: PostgresSinkSettings,
        errors: ErrorsSinkSettings | None = None,
        **quix_options: Any,
    ) -> None:
        self.errors = errors or ErrorsSinkSettings()
        super().__init__(settings, self.errors.ingestions_table, **quix_options)
        self._sql = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (ingestion_id) DO NOTHING"
        ).format(
            _table(settings, self.errors),
            sql.SQL(", ").join(map(sql.Identifier, FIELDS)),
            sql.SQL(", ").join(sql.Placeholder() * len(FIELDS)),
        )

    def _ddl(self) -> list[sql.Composed]:
        return ddl(self.settings, self.errors)

    def _open_pool(self) -> Pool:
        return open_checked_pool(self.settings, 1, 1, f"qanat-ingestions-{self.table}")

    def store(self, rows: list[tuple[Any, ...]]) -> None:
        clean = [
            tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)
            for row in rows
        ]
        self._execute_many(self._sql, clean)


class PostgresIngestionLedger:
    """Reads the ingestions table (``pipelines.control.ingestions.IngestionLedger``); none before it
    exists. Call :meth:`close` at shutdown."""

    def __init__(
        self, settings: PostgresSinkSettings, errors: ErrorsSinkSettings | None = None
    ) -> None:
        self.settings = settings
        self.errors = errors or ErrorsSinkSettings()
        table = _table(settings, self.errors)
        self._regclass = table.as_string()
        self._select = sql.SQL("SELECT {} FROM {} WHERE ingestion_id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, FIELDS)), table
        )
        self._reader = TableReader(
            self.settings, self._regclass, f"qanat-ingestions-reader-{self.errors.ingestions_table}"
        )

    def summary(self, ingestion_id: str) -> dict[str, Any] | None:
        rows = self._reader.rows(self._select, [ingestion_id])
        return rows[0] if rows else None

    def close(self) -> None:
        self._reader.close()
