"""The SQLite sink: the embedded default store, one file, WAL mode.

One table of current state keyed by ``(vertical, type, source_id)``; ``data`` is JSON text
and times are the record contract's fixed-width RFC 3339 text, so text order is time order
(a CHECK constraint keeps it that way).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipelines.core.config import CoreSettings, QanatSettings
from pipelines.core.records import now
from sinks.base import (
    KEY_COLUMNS,
    ROW_COLUMNS,
    SQL_IDENTIFIER,
    BadRowError,
    DeadLetterWriter,
    Row,
    UpsertSink,
)
from sinks.progress import Progress
from sinks.sqlite import progress as progress_sqlite
from sinks.sqlite.conn import connect, create_in_database, write_transaction
from sinks.sqlite.sqlquote import quote_identifier as _q

logger = logging.getLogger(__name__)

# Fixed-width RFC 3339 UTC with microseconds (pipelines.core.records.format_time).
_TIME_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    ".[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)
COLUMNS = (*ROW_COLUMNS, "updated_at")
_KEY = KEY_COLUMNS


class SQLiteSinkSettings(QanatSettings):
    """Settings of ``qanat sink sqlite`` (env ``QANAT_SQLITE_*``, YAML section ``sqlite``)."""

    yaml_section: ClassVar[str] = "sqlite"
    model_config = SettingsConfigDict(env_prefix="QANAT_SQLITE_", extra="forbid")

    path: Path = Field(
        default_factory=lambda: CoreSettings().data_dir / "qanat.db",
        description="The SQLite database file (default: <QANAT_DATA_DIR>/qanat.db); "
        "its directory is created.",
    )
    table: str = Field(
        "records",
        pattern=SQL_IDENTIFIER,
        description="Table of current state, one row per vertical/type/source_id.",
    )
    busy_timeout_ms: int = Field(
        5000,
        ge=0,
        description=(
            "How long a write waits for another connection's lock before the batch is retried."
        ),
    )
    create_tables: bool = Field(True, description="Create the table and index at start-up.")


def ddl(table: str) -> list[str]:
    """The statements that create ``table`` and its indexes, if missing."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {_q(table)} (
            vertical TEXT NOT NULL,
            type TEXT NOT NULL,
            source_id TEXT NOT NULL,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            source TEXT,
            ingestion_id TEXT,
            event_id TEXT,
            event_time TEXT NOT NULL CHECK (event_time GLOB '{_TIME_GLOB}'),
            received_at TEXT CHECK (received_at IS NULL OR received_at GLOB '{_TIME_GLOB}'),
            schema_version INTEGER,
            kafka_topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL,
            kafka_offset INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (vertical, type, source_id)
        )""",
        f"CREATE INDEX IF NOT EXISTS {_q(table + '_updated_at')} ON {_q(table)} (updated_at)",
        # GET /ingestions/{id} counts the records of one ingestion: without it, a full scan.
        f"CREATE INDEX IF NOT EXISTS {_q(table + '_ingestion_id')} ON {_q(table)} (ingestion_id)",
        *progress_sqlite.ddl(table),
    ]


def upsert_sql(table: str) -> str:
    """INSERT … ON CONFLICT DO UPDATE, only where the incoming version is newer."""
    t = _q(table)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in _KEY)
    return (
        f"INSERT INTO {t} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
        f"ON CONFLICT (vertical, type, source_id) DO UPDATE SET {updates} "
        f"WHERE (excluded.event_time, excluded.kafka_offset) > "
        f"({t}.event_time, {t}.kafka_offset)"
    )


def create_tables(conn: sqlite3.Connection, table: str) -> None:
    """Create ``table``, its indexes and its progress table; FatalError on failure."""
    create_in_database(conn, table, ddl(table))


def init_db(settings: SQLiteSinkSettings) -> None:
    """Create the database file, its table and index (``qanat db init``); idempotent."""
    conn = connect(settings)
    try:
        create_tables(conn, settings.table)
    finally:
        conn.close()


def _params(row: Row, updated_at: str) -> tuple[Any, ...]:
    return (*row[:4], row.data_json(), *row[5:], updated_at)  # Row.values() + updated_at


class SQLiteStore:
    """The connection a SQLite sink holds (records or errors): one per sink, opened in
    :meth:`setup`, which creates the sink's table first when ``create_tables``.

    Mixed in before the sink's base class, which gets ``create_tables`` from the settings.
    A sink names its ``table`` and implements :meth:`_ddl`.
    """

    _label: ClassVar[str] = "SQLite sink"
    create_tables: bool  # set by the sink's base class

    def __init__(
        self, settings: SQLiteSinkSettings | None, table: str | None, **options: Any
    ) -> None:
        self.settings = settings or SQLiteSinkSettings()
        self.table = table or self.settings.table
        # the next class in the sink's MRO (UpsertSink, ErrorsSink) takes create_tables
        super().__init__(create_tables=self.settings.create_tables, **options)  # type: ignore[call-arg]
        self._conn: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return self._conn

    def _ddl(self) -> list[str]:
        """The statements that create the sink's table (and its indexes), if missing."""
        raise NotImplementedError

    def _create_tables(self, conn: sqlite3.Connection) -> None:
        create_in_database(conn, self.table, self._ddl())

    def _execute_many(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        """``statement`` once per parameter tuple, in one write transaction."""
        conn = self.connection
        with write_transaction(conn):
            conn.executemany(statement, params)

    def setup(self) -> None:
        self.close()
        conn = connect(self.settings)
        try:
            if self.create_tables:
                self._create_tables(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        logger.info("%s writing to %s table %s", self._label, self.settings.path, self.table)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> None:
        """Raise unless the sink is set up and its database opens and answers (readiness);
        a connection of its own, so any thread may call it."""
        self.connection  # noqa: B018 - raises before setup()
        with closing(sqlite3.connect(self.settings.path, timeout=2.0)) as conn:
            conn.execute("SELECT 1").fetchone()


class SQLiteSink(SQLiteStore, UpsertSink):
    """Upserts records into one SQLite table, one transaction per batch.

    A stored row is replaced only by a newer version, by ``(event_time, kafka_offset)``.

    >>> import tempfile, pathlib
    >>> from quixstreams.sinks.base.batch import SinkBatch
    >>> db = pathlib.Path(tempfile.mkdtemp()) / "qanat.db"
    >>> sink = SQLiteSink(SQLiteSinkSettings(path=db))
    >>> sink.setup()
    >>> record = {"vertical": "shop", "type": "product", "source_id": "p1", "name": "Lamp",
    ...           "vertical_data": {"price": 9}, "event_time": "2026-01-01T00:00:00.000000Z"}
    >>> sink.add(record, "shop/product/p1", 0, [], "qanat.records", 0, 42)
    >>> sink.flush()
    >>> sink.connection.execute("SELECT name, data, kafka_offset FROM records").fetchall()
    [('Lamp', '{"price":9}', 42)]
    >>> sink.close()
    """

    def __init__(
        self,
        settings: SQLiteSinkSettings | None = None,
        *,
        dead_letters: DeadLetterWriter | None = None,
        **quix_options: Any,
    ) -> None:
        super().__init__(settings, None, dead_letters=dead_letters, **quix_options)
        self._sql = upsert_sql(self.table)
        self._progress = progress_sqlite.SQLiteProgress(self.table)

    def _ddl(self) -> list[str]:
        return ddl(self.table)

    def upsert(self, rows: list[Row], progress: Sequence[Progress] = ()) -> None:
        conn = self.connection
        updated_at = now()
        params = [_params(row, updated_at) for row in rows]
        with write_transaction(conn):
            try:
                conn.executemany(self._sql, params)
                self._progress.add(conn, progress, updated_at)
            except (OverflowError, UnicodeEncodeError) as exc:  # a value SQLite cannot bind
                raise BadRowError(f"{type(exc).__name__}: {exc}") from exc
