"""The SQLite ingestions table: :class:`SQLiteIngestionsSink` stores the ingestion summaries
(:mod:`sinks.ingestions`), :class:`SQLiteIngestionLedger` reads one for
``GET /api/v1/ingestions/{id}``.

>>> import tempfile, pathlib
>>> settings = SQLiteSinkSettings(path=pathlib.Path(tempfile.mkdtemp()) / "qanat.db")
>>> sink = SQLiteIngestionsSink(settings)
>>> sink.setup()
>>> summary = {"ingestion_id": "i1", "vertical": "shop", "type": "product",
...            "source": "http", "accepted": 3, "received_at": "2026-01-01T00:00:00.000000Z"}
>>> sink.add(summary, "i1", 0, [], "qanat.ingestions", 0, 0)
>>> sink.flush()
>>> sink.close()
>>> SQLiteIngestionLedger(settings).summary("i1")["accepted"]
3
"""

from __future__ import annotations

from typing import Any

from sinks.errors import ErrorsSinkSettings
from sinks.ingestions import FIELDS, IngestionsSink
from sinks.sqlite.conn import read_table
from sinks.sqlite.sink import SQLiteSinkSettings, SQLiteStore
from sinks.sqlite.sqlquote import quote_identifier as _q


def ddl(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(table)} (ingestion_id TEXT PRIMARY KEY, "
        "vertical TEXT, type TEXT, source TEXT, accepted INTEGER NOT NULL, received_at TEXT)"
    )


class SQLiteIngestionsSink(SQLiteStore, IngestionsSink):
    """Stores ingestion summaries in SQLite (default table ``ingestions``)."""

    _label = "ingestions sink"

    def __init__(
        self,
        settings: SQLiteSinkSettings | None = None,
        errors: ErrorsSinkSettings | None = None,
        **quix_options: Any,
    ) -> None:
        super().__init__(
            settings, (errors or ErrorsSinkSettings()).ingestions_table, **quix_options
        )
        self._sql = (
            f"INSERT INTO {_q(self.table)} ({', '.join(FIELDS)}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (ingestion_id) DO NOTHING"
        )

    def _ddl(self) -> list[str]:
        return [ddl(self.table)]

    def store(self, rows: list[tuple[Any, ...]]) -> None:
        self._execute_many(self._sql, rows)


class SQLiteIngestionLedger:
    """Reads the ingestions table (``pipelines.control.ingestions.IngestionLedger``); none before it
    exists."""

    def __init__(
        self, settings: SQLiteSinkSettings | None = None, errors: ErrorsSinkSettings | None = None
    ) -> None:
        self.settings = settings or SQLiteSinkSettings()
        self.table = (errors or ErrorsSinkSettings()).ingestions_table

    def summary(self, ingestion_id: str) -> dict[str, Any] | None:
        query = f"SELECT {', '.join(FIELDS)} FROM {_q(self.table)} WHERE ingestion_id = ?"
        rows = read_table(self.settings, self.table, query, (ingestion_id,))
        return dict(zip(FIELDS, rows[0], strict=True)) if rows else None

    def close(self) -> None:
        return None
