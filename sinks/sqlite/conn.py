"""Connections to SQLite shared by the sink and the stores beside it (errors, ingestions,
reader): error classification by result code, connections, the write transaction, table
creation, and the reads of a table that may not exist yet.

Errors are told apart by SQLite's result codes and exception classes only (never by
message text): SQLITE_BUSY and SQLITE_LOCKED (the primary code, the low byte of an
extended one) are retriable, an integrity or data error is a bad row, anything else fatal.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> create_in_database(conn, "t", ["CREATE TABLE t (n INTEGER PRIMARY KEY)"])
>>> with write_transaction(conn):
...     _ = conn.execute("INSERT INTO t VALUES (1)")
>>> with write_transaction(conn):
...     _ = conn.execute("INSERT INTO t VALUES (2)")
...     _ = conn.execute("INSERT INTO t VALUES (1)")
Traceback (most recent call last):
sinks.base.BadRowError: SQLITE_CONSTRAINT_PRIMARYKEY: UNIQUE constraint failed: t.n
>>> conn.execute("SELECT n FROM t").fetchall(), conn.in_transaction  # 2 was rolled back
([(1,)], False)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pipelines.core.errors import FatalError, RetriableError
from sinks.base import BadRowError

# SQLite primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
_RETRIABLE_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED})


class Database(Protocol):
    """Where a SQLite database is and how long a write waits for a lock
    (:class:`sinks.sqlite.sink.SQLiteSinkSettings` is one)."""

    @property
    def path(self) -> Path: ...
    @property
    def busy_timeout_ms(self) -> int: ...


def classify(exc: sqlite3.Error) -> Exception:
    """RetriableError, FatalError or BadRowError for a sqlite3 error, by its result code."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", type(exc).__name__)
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return BadRowError(f"{name}: {exc}", name)
    if code is not None and code & 0xFF in _RETRIABLE_CODES:
        return RetriableError(f"SQLite is busy ({name}): {exc}")
    return FatalError(f"SQLite error {name}: {exc}")


def connect(database: Database) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit)."""
    try:
        database.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            database.path,
            timeout=database.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(database.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
    except (OSError, sqlite3.Error) as exc:
        raise FatalError(f"cannot open SQLite database {database.path}: {exc}") from exc
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """The block in one write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), on an
    autocommit connection (:func:`connect`): on any exception it is rolled back, and a
    sqlite3 error (of the block, the commit or the rollback) is raised classified."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise classify(exc) from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:  # some errors (disk full, I/O) have already rolled back
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as again:
                raise classify(again) from again
        if isinstance(exc, sqlite3.Error):
            raise classify(exc) from exc
        raise


def create_in_database(conn: sqlite3.Connection, table: str, statements: Iterable[str]) -> None:
    """Run ``statements`` (the DDL of ``table``) in one write transaction; FatalError on
    failure."""
    try:
        with write_transaction(conn):
            for statement in statements:
                conn.execute(statement)
    except Exception as exc:
        raise FatalError(f"cannot create table {table!r}: {exc}") from exc


def read_table(
    database: Database, table: str, query: str, params: tuple[Any, ...]
) -> list[sqlite3.Row] | None:
    """The rows of ``query``, which reads ``table``, on a short connection of its own; None
    while there is no database file or no ``table`` (a reader may start before the sink
    that creates it)."""
    if not database.path.exists():
        return None
    conn = connect(database)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return conn.execute(query, params).fetchall() if found else None
    except sqlite3.Error as exc:
        raise classify(exc) from exc
    finally:
        conn.close()
