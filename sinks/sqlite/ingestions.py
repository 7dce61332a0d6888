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

import sqlite3
from typing import Any

from sinks.errors import ErrorsSinkSettings
from sinks.ingestions import FIELDS, IngestionsSink
from sinks.sqlite.sink import SQLiteSinkSettings, SQLiteStore, classify, connect
from sinks.sqlquote import quote_identifier as _q


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

    def _create_tables(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(ddl(self.table))
        except sqlite3.Error as exc:
            raise classify(exc) from exc

    def store(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.connection
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise classify(exc) from exc


class SQLiteIngestionLedger:
    """Reads the ingestions table (``pipelines.control.app.IngestionLedger``); none before it
    exists."""

    def __init__(
        self, settings: SQLiteSinkSettings | None = None, errors: ErrorsSinkSettings | None = None
    ) -> None:
        self.settings = settings or SQLiteSinkSettings()
        self.table = (errors or ErrorsSinkSettings()).ingestions_table

    def summary(self, ingestion_id: str) -> dict[str, Any] | None:
        if not self.settings.path.exists():
            return None
        conn = connect(self.settings)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
            ).fetchone()
            if not found:
                return None
            row = conn.execute(
                f"SELECT {', '.join(FIELDS)} FROM {_q(self.table)} WHERE ingestion_id = ?",
                (ingestion_id,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise classify(exc) from exc
        finally:
            conn.close()
        return None if row is None else dict(zip(FIELDS, row, strict=True))

    def close(self) -> None:
        return None
