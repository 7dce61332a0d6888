"""The ingestions table: how many events each ingestion put in Kafka (``accepted``).

The HTTP source produces one summary per ingestion to the compacted topic
``<prefix>.ingestions`` (key: the ingestion id; value ``{ingestion_id, vertical, type,
source, accepted, received_at}``) after its events, in the same acknowledged batch. The
errors sink process (``qanat sink errors``) stores them here, next to the errors table,
with an :class:`IngestionsSink`; ``GET /api/v1/ingestions/{id}`` reads ``accepted`` from
it with an ingestion ledger (:class:`SQLiteIngestionLedger`,
:class:`sinks.ingestions_postgres.PostgresIngestionLedger`).

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

import abc
import logging
import sqlite3
from typing import Any

from quixstreams.sinks import BatchingSink, SinkBatch

from sinks.base import backpressure_on_retriable
from sinks.errors import ErrorsSinkSettings
from sinks.sqlite import SQLiteSinkSettings, SQLiteStore, classify, connect
from sinks.sqlquote import quote_identifier as _q

logger = logging.getLogger(__name__)

FIELDS = ("ingestion_id", "vertical", "type", "source", "accepted", "received_at")


def summary_row(value: Any) -> tuple[Any, ...] | None:
    """The row of one summary message, or None (logged, skipped) when it is not one.

    >>> summary_row({"ingestion_id": "i", "accepted": -1}) is None
    True
    """
    if not isinstance(value, dict):
        return None
    ingestion_id, accepted = value.get("ingestion_id"), value.get("accepted")
    if not isinstance(ingestion_id, str) or not ingestion_id:
        return None
    if type(accepted) is not int or not 0 <= accepted < 2**63:
        return None

    def text(name: str) -> str | None:
        found = value.get(name)
        return found if isinstance(found, str) else None

    return (
        ingestion_id,
        text("vertical"),
        text("type"),
        text("source"),
        accepted,
        text("received_at"),
    )


class IngestionsSink(BatchingSink, abc.ABC):
    """Base of the ingestions sinks: read the topic with the ``json`` value deserializer;
    one idempotent insert per batch (a summary, keyed by its id, is stored once)."""

    def __init__(self, *, create_tables: bool = True, **quix_options: Any) -> None:
        super().__init__(**quix_options)
        self.create_tables = create_tables

    @abc.abstractmethod
    def setup(self) -> None: ...

    @abc.abstractmethod
    def store(self, rows: list[tuple[Any, ...]]) -> None: ...

    def close(self) -> None:
        """Release the connection (subclasses extend it)."""

    def flush(self) -> None:
        super().flush()  # type: ignore[no-untyped-call]

    def write(self, batch: SinkBatch) -> None:
        rows: dict[str, tuple[Any, ...]] = {}
        for item in batch:
            row = summary_row(item.value)
            if row is None:
                logger.warning(
                    "%s@%d is not an ingestion summary: skipped", batch.topic, item.offset
                )
                continue
            rows[row[0]] = row
        if rows:
            with backpressure_on_retriable(batch):
                self.store(list(rows.values()))


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
    """Reads the ingestions table (``pipelines.control.IngestionLedger``); none before it
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
