"""The records reader over PostgreSQL (:class:`pipelines.control.records.RecordReader`), through a
small pool of autocommit connections. Before the table exists, there are no records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from pipelines.core.records import format_time
from sinks.postgres import progress as progress_postgres
from sinks.postgres.conn import TableReader
from sinks.postgres.settings import PostgresSinkSettings

_FIELDS = (
    "vertical",
    "type",
    "source_id",
    "name",
    "data",
    "source",
    "ingestion_id",
    "event_time",
    "updated_at",
    "schema_version",
)


def record_item(row: dict[str, Any]) -> dict[str, Any]:
    """One reader item (``pipelines.control.records.RECORD_FIELDS``) from a selected row."""
    item = {name: row[name] for name in _FIELDS}
    item["vertical_data"] = item.pop("data")
    for name in ("event_time", "updated_at"):
        item[name] = format_time(item[name]) if item[name] is not None else None
    return {name: item[name] for name in (*_FIELDS[:4], "vertical_data", *_FIELDS[5:])}


class PostgresRecordReader:
    """Reads the records table of ``qanat sink postgres``; call :meth:`close` at shutdown."""

    def __init__(self, settings: PostgresSinkSettings) -> None:
        self.settings = settings
        table = sql.Identifier(settings.schema_name, settings.table)
        self._regclass = table.as_string()
        self._select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, _FIELDS)), table
        )
        self._count = sql.SQL("SELECT COUNT(*) AS n FROM {} WHERE ingestion_id = %s").format(table)
        self._reader = TableReader(
            self.settings, self._regclass, f"qanat-records-reader-{self.settings.table}"
        )
        # checked on its own: it may not exist yet while the records table does (an older sink)
        progress = progress_postgres.identifier(settings.schema_name, settings.table)
        self._progress_regclass = progress.as_string()
        self._handled = progress_postgres.handled_sql(settings.schema_name, settings.table)

    def _query(self, query: sql.Composed, params: list[Any]) -> list[dict[str, Any]]:
        rows = self._reader.rows(query, params)
        return [] if rows is None else rows

    def page(
        self,
        vertical: str,
        type_: str,
        *,
        after: str | None,
        limit: int,
        source_id: str | None = None,
        updated_since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        query = sql.SQL(
            "{} WHERE vertical = %s AND type = %s "
            'AND (%s::text IS NULL OR source_id COLLATE "C" > %s) '
            "AND (%s::text IS NULL OR source_id = %s) "
            "AND (%s::timestamptz IS NULL OR updated_at >= %s) "
            'ORDER BY source_id COLLATE "C" LIMIT %s'
        ).format(self._select)
        params: list[Any] = [vertical, type_, after, after, source_id, source_id]
        params += [updated_since, updated_since, limit]
        return [record_item(row) for row in self._query(query, params)]

    def get(self, vertical: str, type_: str, source_id: str) -> dict[str, Any] | None:
        query = sql.SQL("{} WHERE vertical = %s AND type = %s AND source_id = %s").format(
            self._select
        )
        rows = self._query(query, [vertical, type_, source_id])
        return record_item(rows[0]) if rows else None

    def count_ingestion(self, ingestion_id: str) -> int:
        rows = self._query(self._count, [ingestion_id])
        return int(rows[0]["n"]) if rows else 0

    def handled_ingestion(self, ingestion_id: str) -> int:
        """Records of ``ingestion_id`` the sink upserted or found superseded (0 before the
        sink created its progress table)."""
        rows = self._reader.rows(self._handled, [ingestion_id], self._progress_regclass)
        return int(rows[0]["n"]) if rows else 0

    def close(self) -> None:
        self._reader.close()
