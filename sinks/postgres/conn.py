"""Connections to PostgreSQL shared by the sink and the stores beside it (errors,
ingestions, reader): error classification by SQLSTATE, start-up connections, pools, the
write transaction, DDL under an advisory lock and a table reader.

Errors are told apart by SQLSTATE only (never by message text):

* retriable - classes 08 (connection), 40 (serialization failure, deadlock), 53 (resources),
  57 (operator intervention: shutdown, terminated backend), 58 (system), 55P03 (lock
  timeout), connection errors without a SQLSTATE and pool timeouts;
* fatal - class 28 (authentication), 42501 (insufficient privilege), 3D000 (no database)
  and anything unexpected;
* a bad row - classes 22 (data exception, e.g. ``\\u0000`` in jsonb is 22P05), 23 (integrity)
  and 54 (a value beyond a program limit, e.g. an oversized jsonb).

>>> from psycopg import errors
>>> type(classify(errors.SerializationFailure())).__name__
'RetriableError'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pipelines.core.errors import FatalError, RetriableError
from sinks.base import BadRowError

if TYPE_CHECKING:
    from sinks.postgres.settings import PostgresSinkSettings

_RETRIABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_BAD_ROW_CLASSES = frozenset({"22", "23", "54"})
_FATAL_STATES = frozenset({"42501", "3D000"})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def classify(exc: BaseException) -> Exception:
    """RetriableError, FatalError or BadRowError for a psycopg error, by SQLSTATE."""
    if isinstance(exc, PoolTimeout):
        return RetriableError(f"no PostgreSQL connection available: {_first_line(exc)}")
    state: str | None = getattr(exc, "sqlstate", None)
    if state is None:  # raised by the client: connection trouble, or a value it cannot send
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return BadRowError(_first_line(exc))
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return RetriableError(f"PostgreSQL connection: {_first_line(exc)}")
        return FatalError(f"PostgreSQL client error: {_first_line(exc)}")
    if state[:2] in _RETRIABLE_CLASSES or state == "55P03":
        return RetriableError(f"PostgreSQL {state}: {_first_line(exc)}")
    if state[:2] in _BAD_ROW_CLASSES:
        return BadRowError(f"{state}: {_first_line(exc)}", state)
    if state[:2] == "28" or state in _FATAL_STATES:
        return FatalError(f"PostgreSQL refused ({state}): {_first_line(exc)}")
    return FatalError(f"PostgreSQL error {state}: {_first_line(exc)}")


def connect(settings: PostgresSinkSettings) -> psycopg.Connection[Any]:
    """One connection for start-up work; every failure is a FatalError with one line.

    libpq reports a refused login without a SQLSTATE, so a failure while the server answers
    a ping means credentials, database name or pg_hba.conf; no answer means unreachable.
    """
    dsn = settings.dsn.get_secret_value()
    try:
        return psycopg.connect(dsn, **settings.connect_kwargs())
    except psycopg.Error as exc:
        error = classify(exc)
        if isinstance(error, FatalError):
            raise error from None
        if psycopg.pq.PGconn.ping(dsn.encode()) == psycopg.pq.Ping.OK:
            message = f"PostgreSQL at {settings.where()} refused the connection"
        else:
            message = f"PostgreSQL at {settings.where()} is unreachable"
        raise FatalError(f"{message}: {_first_line(exc)}") from None


def create_in_schema(
    conn: psycopg.Connection[Any],
    settings: PostgresSinkSettings,
    table: str,
    statements: list[sql.Composed],
) -> None:
    """Create the schema (if missing), then run ``statements`` (the DDL of ``table``);
    safe with concurrent replicas. FatalError on failure."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('qanat.sink.ddl'))")
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [settings.schema_name])
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.schema_name))
                )
            for statement in statements:
                cur.execute(statement)
    except psycopg.Error as exc:
        error = classify(exc)
        raise FatalError(f"cannot create {settings.schema_name}.{table}: {error}") from None


Pool = ConnectionPool[psycopg.Connection[Any]]


def open_pool(
    settings: PostgresSinkSettings,
    *,
    min_size: int,
    max_size: int,
    name: str,
    wait: bool,
    **options: Any,
) -> Pool:
    """A pool of connections with the settings' DSN, timeouts and libpq options.

    ``options``: ``check`` and more of ConnectionPool's arguments, plus connection
    attributes such as ``autocommit``. With ``wait``, it returns once ``min_size``
    connections are open, else FatalError.
    """
    check = options.pop("check", None)
    pool: Pool = ConnectionPool(
        settings.dsn.get_secret_value(),
        min_size=min_size,
        max_size=max_size,
        timeout=settings.connect_timeout_s,
        kwargs=settings.connect_kwargs() | options,
        check=check,
        open=False,
        name=name,
    )
    try:
        pool.open(wait=wait, timeout=settings.connect_timeout_s)
    except PoolTimeout as exc:
        pool.close()
        raise FatalError(
            f"PostgreSQL at {settings.where()}: pool did not fill in {settings.connect_timeout_s}s"
        ) from exc
    return pool


def open_checked_pool(
    settings: PostgresSinkSettings, min_size: int, max_size: int, name: str
) -> Pool:
    """Autocommit connections, each checked before use, connecting in the background:
    what the errors, ingestions and reader stores use."""
    return open_pool(
        settings,
        min_size=min_size,
        max_size=max_size,
        name=name,
        wait=False,
        check=ConnectionPool.check_connection,
        autocommit=True,
    )


@contextmanager
def write_transaction(pool: Pool) -> Iterator[psycopg.Cursor[Any]]:
    """A cursor in one transaction on a connection of ``pool``: committed at the end of the
    block, rolled back on any exception; a psycopg error (a pool timeout is one) is raised
    classified (:func:`classify`)."""
    try:
        with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur
    except psycopg.Error as exc:
        raise classify(exc) from exc


class TableReader:
    """Reads a table (``regclass``, or another one named per query) over a checked pool
    opened on first use; no rows (None) until the table exists, so a reader can start
    before the sink that creates the table."""

    def __init__(self, settings: PostgresSinkSettings, regclass: str, pool_name: str) -> None:
        self.settings, self.regclass, self.pool_name = settings, regclass, pool_name
        self._pool: Pool | None = None
        self._existing: set[str] = set()

    def rows(
        self, query: sql.Composed, params: list[Any], regclass: str | None = None
    ) -> list[dict[str, Any]] | None:
        """The rows of ``query``, which reads ``regclass`` (default: the reader's table);
        None without that table; RetriableError/FatalError by SQLSTATE."""
        table = regclass or self.regclass
        if self._pool is None:
            size = self.settings.pool_max_size
            self._pool = open_checked_pool(self.settings, 0, size, self.pool_name)
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                if table not in self._existing:
                    cur.execute("SELECT to_regclass(%s) AS found", [table])
                    found = cur.fetchone()
                    if not (found and found["found"]):
                        return None
                    self._existing.add(table)
                return cur.execute(query, params).fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
