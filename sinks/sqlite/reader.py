"""The records reader over SQLite (:class:`pipelines.control.records.RecordReader`).

One short connection per call (WAL mode: reads never wait for the sink's writes), so the
HTTP service can read the file another process (``qanat sink sqlite``) writes. Before the
database or its table exists, there are no records.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import orjson

from pipelines.core.records import format_time
from sinks.progress import progress_table
from sinks.sqlite import progress as progress_sqlite
from sinks.sqlite.conn import read_table
from sinks.sqlite.sink import SQLiteSinkSettings
from sinks.sqlite.sqlquote import quote_identifier as _q

_SELECT = (
    "SELECT vertical, type, source_id, name, data, source, ingestion_id, event_time, "
    "updated_at, schema_version FROM {table}"
)


def record_item(row: sqlite3.Row) -> dict[str, Any]:
    """One reader item (``pipelines.control.records.RECORD_FIELDS``) from a row of ``_SELECT``."""
    item = dict(row)
    item["vertical_data"] = orjson.loads(item.pop("data"))
    return {
        "vertical": item["vertical"],
        "type": item["type"],
        "source_id": item["source_id"],
        "name": item["name"],
        "vertical_data": item["vertical_data"],
        "source": item["source"],
        "ingestion_id": item["ingestion_id"],
        "event_time": item["event_time"],
        "updated_at": item["updated_at"],
        "schema_version": item["schema_version"],
    }


class SQLiteRecordReader:
    """Reads the records table of ``qanat sink sqlite``.

    >>> import tempfile, pathlib
    >>> reader = SQLiteRecordReader(SQLiteSinkSettings(path=pathlib.Path(tempfile.mkdtemp())
    ...                                                / "none.db"))
    >>> reader.page("shop", "product", after=None, limit=10), reader.count_ingestion("x")
    ([], 0)
    >>> reader.handled_ingestion("x")
    0
    """

    def __init__(self, settings: SQLiteSinkSettings | None = None) -> None:
        self.settings = settings or SQLiteSinkSettings()
        self.table = self.settings.table
        self._select = _SELECT.format(table=_q(self.table))

    def _query(
        self, query: str, params: tuple[Any, ...], table: str | None = None
    ) -> list[sqlite3.Row]:
        """The rows; none when there is no database or ``table`` (default: records) yet."""
        return read_table(self.settings, table or self.table, query, params) or []

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
        since = None if updated_since is None else format_time(updated_since)
        query = (
            f"{self._select} WHERE vertical = ? AND type = ? "
            "AND (? IS NULL OR source_id > ?) AND (? IS NULL OR source_id = ?) "
            "AND (? IS NULL OR updated_at >= ?) ORDER BY source_id LIMIT ?"
        )
        params = (vertical, type_, after, after, source_id, source_id, since, since, limit)
        return [record_item(row) for row in self._query(query, params)]

    def get(self, vertical: str, type_: str, source_id: str) -> dict[str, Any] | None:
        query = f"{self._select} WHERE vertical = ? AND type = ? AND source_id = ?"
        rows = self._query(query, (vertical, type_, source_id))
        return record_item(rows[0]) if rows else None

    def count_ingestion(self, ingestion_id: str) -> int:
        query = f"SELECT COUNT(*) FROM {_q(self.table)} WHERE ingestion_id = ?"
        rows = self._query(query, (ingestion_id,))
        return int(rows[0][0]) if rows else 0

    def handled_ingestion(self, ingestion_id: str) -> int:
        """Records of ``ingestion_id`` the sink upserted or found superseded (0 before the
        sink created its progress table)."""
        query = progress_sqlite.handled_sql(self.table)
        rows = self._query(query, (ingestion_id,), progress_table(self.table))
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        return None
