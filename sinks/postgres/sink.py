"""The PostgreSQL sink: COPY each batch into a temporary table, then one guarded upsert.

While batches bring only keys the table does not have yet, they are COPied straight into it
(under a savepoint; the primary key turns a stored key back to the upsert): see
:meth:`PostgresSink.upsert`.

Errors are told apart by SQLSTATE only: see :mod:`sinks.postgres.conn`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps

from sinks.base import (
    KEY_COLUMNS,
    ROW_COLUMNS,
    BadRowError,
    DeadLetterWriter,
    Row,
    UpsertSink,
)
from sinks.postgres import progress as progress_postgres
from sinks.postgres.conn import Pool, connect, create_in_schema, open_pool, write_transaction
from sinks.postgres.settings import PostgresSinkSettings
from sinks.progress import Progress

logger = logging.getLogger(__name__)

COLUMNS = ROW_COLUMNS
_TYPES = (
    "text NOT NULL",
    "text NOT NULL",
    "text NOT NULL",
    "text NOT NULL",
    "jsonb NOT NULL",
    "text",
    "text",
    "text",
    "timestamptz NOT NULL",
    "timestamptz",
    "bigint",
    "text NOT NULL",
    "integer NOT NULL",
    "bigint NOT NULL",
)
_KEY = KEY_COLUMNS
_STAGE = sql.Identifier("pg_temp", "qanat_stage")
# How a Row's fields are sent by COPY (text format: the server parses each for its column).
_COPY_TYPES = [
    "int8" if t.startswith(("bigint", "integer")) else "jsonb" if t.startswith("jsonb") else "text"
    for t in _TYPES
]
RETRY_DIRECT_AFTER = 16
"""Batches that go through the stage after one brought an already stored key."""


def ddl(settings: PostgresSinkSettings) -> list[sql.Composed]:
    """The statements that create the table, its indexes and its progress table
    (:mod:`sinks.progress`), if missing."""
    table = sql.Identifier(settings.schema_name, settings.table)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
        for c, t in zip(COLUMNS, _TYPES, strict=True)
    )
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (vertical, type, source_id))"
        ).format(table, columns),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at)").format(
            sql.Identifier(f"{settings.table}_updated_at"[:63]), table
        ),
        # GET /ingestions/{id} counts the records of one ingestion: without it, a full scan.
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (ingestion_id)").format(
            sql.Identifier(f"{settings.table}_ingestion_id"[:63]), table
        ),
        *progress_postgres.ddl(settings.schema_name, settings.table),
    ]


def create_tables(conn: psycopg.Connection[Any], settings: PostgresSinkSettings) -> None:
    """Create the schema (if missing), table and index; safe with concurrent replicas."""
    create_in_schema(conn, settings, settings.table, ddl(settings))


def init_db(settings: PostgresSinkSettings) -> None:
    """Create the schema, table and index (``qanat db init postgres``); idempotent."""
    with connect(settings) as conn:
        create_tables(conn, settings)


def _stage_sql() -> sql.Composed:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t.removesuffix(" NOT NULL")))
        for c, t in zip(COLUMNS, _TYPES, strict=True)
    )
    return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        _STAGE, columns
    )


def _upsert_sql(settings: PostgresSinkSettings) -> sql.Composed:
    names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in (*COLUMNS, "updated_at")
        if c not in _KEY
    )
    return sql.SQL(
        "INSERT INTO {table} AS t ({names}, updated_at) SELECT {names}, now() FROM {stage} "
        "ON CONFLICT (vertical, type, source_id) DO UPDATE SET {updates} "
        "WHERE (EXCLUDED.event_time, EXCLUDED.kafka_offset) > (t.event_time, t.kafka_offset)"
    ).format(
        table=sql.Identifier(settings.schema_name, settings.table),
        names=names,
        stage=_STAGE,
        updates=updates,
    )


class PostgresStore:
    """The pool a PostgreSQL sink holds (records or errors), opened in :meth:`setup` after
    one connection checked the settings and, when ``create_tables``, created the table.

    Mixed in before the sink's base class, which gets ``create_tables`` from the settings.
    A sink names its ``table`` and implements :meth:`_ddl` and :meth:`_open_pool`.
    """

    _label: ClassVar[str] = "PostgreSQL sink"
    create_tables: bool  # set by the sink's base class

    def __init__(self, settings: PostgresSinkSettings, table: str, **options: Any) -> None:
        self.settings = settings
        self.table = table
        # the next class in the sink's MRO (UpsertSink, ErrorsSink) takes create_tables
        super().__init__(create_tables=settings.create_tables, **options)  # type: ignore[call-arg]
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called")
        return self._pool

    def _ddl(self) -> list[sql.Composed]:
        """The statements that create the sink's table (and its indexes), if missing."""
        raise NotImplementedError

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        create_in_schema(conn, self.settings, self.table, self._ddl())

    def _open_pool(self) -> Pool:
        raise NotImplementedError

    def _execute_many(self, statement: sql.Composed, params: list[tuple[Any, ...]]) -> None:
        """``statement`` once per parameter tuple, in one transaction."""
        with write_transaction(self.pool) as cur:
            cur.executemany(statement, params)

    def setup(self) -> None:
        self.close()
        with connect(self.settings) as conn:  # fail fast, with one line, on bad settings
            if self.create_tables:
                self._create_tables(conn)
        self._pool = self._open_pool()
        s = self.settings
        logger.info(
            "%s writing to %s table %s.%s", self._label, s.where(), s.schema_name, self.table
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def ping(self) -> None:
        """Raise unless the sink is set up and ``SELECT 1`` answers on its pool (readiness)."""
        with self.pool.connection(timeout=self.settings.connect_timeout_s) as conn:
            conn.execute("SELECT 1")


class PostgresSink(PostgresStore, UpsertSink):
    """Upserts records into a PostgreSQL table: per batch, COPY then one guarded upsert.

    A stored row is replaced only by a newer version, by ``(event_time, kafka_offset)``.
    Needs the ``postgres`` extra (psycopg 3 and psycopg_pool).

    Example (with a server from ``scripts/postgres-local.sh``)::

        from sinks.postgres.sink import PostgresSink
        from sinks.postgres.settings import PostgresSinkSettings

        settings = PostgresSinkSettings(
            dsn="postgresql://qanat:qanat@127.0.0.1:5432/qanat_test")
        sink = PostgresSink(settings)
        sink.setup()  # opens the pool, creates the table
        record = {"vertical": "shop", "type": "product", "source_id": "p1",
                  "name": "Lamp", "vertical_data": {"price": 9},
                  "event_time": "2026-01-01T00:00:00.000000Z"}
        sink.add(record, "shop/product/p1", 0, [], "qanat.records", 0, 42)
        sink.flush()  # one transaction; SinkBackpressureError if it must be retried
        sink.close()
    """

    def __init__(
        self,
        settings: PostgresSinkSettings,
        *,
        dead_letters: DeadLetterWriter | None = None,
        **quix_options: Any,
    ) -> None:
        super().__init__(settings, settings.table, dead_letters=dead_letters, **quix_options)
        self._stage_sql = _stage_sql()
        names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        table = sql.Identifier(settings.schema_name, settings.table)
        self._copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(_STAGE, names)
        self._copy_table_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)
        self._direct_after = 0  # batches until the next try of a direct COPY
        self._upsert_sql = _upsert_sql(settings)
        self._progress_sql = progress_postgres.add_sql(settings.schema_name, settings.table)

    def _ddl(self) -> list[sql.Composed]:
        return ddl(self.settings)

    def _open_pool(self) -> Pool:
        s = self.settings
        return open_pool(
            s,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            name=f"qanat-{s.schema_name}.{s.table}",
            wait=s.pool_min_size > 0,
        )

    def upsert(self, rows: list[Row], progress: Sequence[Progress] = ()) -> None:
        """One transaction: COPY into the stage, the guarded upsert, then the progress.

        While batches bring only new keys (a first load, a backfill), the rows are COPied
        straight into the table instead, under a savepoint: the primary key refuses a key
        that is already stored (23505), and then that batch takes the stage and the upsert
        after all, and the next :data:`RETRY_DIRECT_AFTER` batches go there directly.
        """
        with write_transaction(self.pool) as cur:
            if rows:
                self._write(cur.connection, cur, rows)
            if progress:
                cur.execute(self._progress_sql, progress_postgres.add_params(progress))

    def _write(
        self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], rows: list[Row]
    ) -> None:
        if self._direct_after > 0:
            self._direct_after -= 1
        elif self._copy_direct(conn, cur, rows):
            return
        cur.execute(self._stage_sql)
        self._copy(cur, self._copy_sql, rows)
        cur.execute(self._upsert_sql)

    def _copy_direct(
        self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], rows: list[Row]
    ) -> bool:
        """COPY ``rows`` into the table; False (nothing kept) if a key is already stored."""
        try:
            with conn.transaction():  # a savepoint
                self._copy(cur, self._copy_table_sql, rows)
        except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation):
            # a stored key; or a table whose updated_at has no DEFAULT now() (not our DDL):
            # every other NOT NULL column is checked before, so no row is at fault
            self._direct_after = RETRY_DIRECT_AFTER
            return False
        return True

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], statement: sql.Composed, rows: list[Row]) -> None:
        """COPY ``rows`` as they are: ``data`` goes out as JSON text (orjson)."""
        set_json_dumps(orjson.dumps, cur)
        with cur.copy(statement) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                try:
                    write(row)
                except TypeError as exc:  # orjson.JSONEncodeError: the other fields are checked
                    raise BadRowError(f"vertical_data is not serializable: {exc}") from None
                except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
                    raise BadRowError(f"text is not valid UTF-8: {exc.reason}") from None
