"""Sink throughput: the PostgreSQL and SQLite sinks against the plainest write of the same rows.

Every contender gets the same rows: ``records`` normalized records (the shape
``pipelines.core.records.normalize`` makes), unique keys, about 200 bytes of ``vertical_data``
each, all from one topic partition at consecutive offsets. Kafka is left out so the numbers
measure the sink: each sink is driven directly, as Quix Streams drives it, with
``sink.setup()`` once (not timed), ``sink.add(...)`` per record and ``sink.flush()`` every
``BATCH`` records (one checkpoint's batch), into a table created empty for each run.

* ``postgres_sink_vs_copy`` - :class:`sinks.postgres.sink.PostgresSink` against a plain ``COPY``
  of the same rows (same columns, same DDL: primary key and ``updated_at`` index), one
  ``COPY`` and one transaction per ``BATCH`` rows: the physical reference.
* ``postgres_sink_vs_quix_postgresql_sink`` - the same sink run against Quix Streams' own
  ``PostgreSQLSink`` with ``upsert_on_primary_key=True`` on primary key
  ``(vertical, type, source_id)``, driven the same way. Its table is created beforehand with
  the columns it writes (the record's fields, plus its ``__key`` and ``timestamp``) and
  ``schema_auto_update=False``, which spares it a schema check per batch: the fastest way
  to run it.
* ``sqlite_sink`` - :class:`sinks.sqlite.sink.SQLiteSink` against a plain ``executemany``
  ``INSERT`` into an empty table of the same DDL, same connection settings (WAL), one
  transaction per ``BATCH`` rows. Reported, no target.

Each contender runs ``repeats`` times, alternating; the best run of each counts. The two
PostgreSQL results come from one measurement (same rows, same run). PostgreSQL: the server
named by ``QANAT_BENCH_POSTGRES_DSN``, else the one ``scripts/postgres-local.sh`` starts.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    ROOT,
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from pipelines.core.records import RawMeta, format_time, new_id, normalize, now
from pipelines.core.topics import record_key
from sinks.sqlite.conn import connect
from sinks.sqlite.sink import COLUMNS, SQLiteSink, SQLiteSinkSettings, create_tables

logger = logging.getLogger(__name__)

DSN_ENV = "QANAT_BENCH_POSTGRES_DSN"
DEFAULT_RECORDS = 100_000
BATCH = 5_000
TOPIC = "bench.records"
VERTICAL, TYPE = "shop", "product"
SEED_TIME = datetime(2026, 1, 1, tzinfo=UTC)

NAME_COPY = "postgres_sink_vs_copy"
NAME_QUIX = "postgres_sink_vs_quix_postgresql_sink"
NAME_SQLITE = "sqlite_sink"
TARGET_COPY = "ratio >= 0.5"
TARGET_QUIX = "ratio >= 3"
BASELINE_COPY = (
    f"plain COPY of the same rows into an empty table of the same DDL, {BATCH:,} rows per "
    "COPY and transaction, same server and run"
)
BASELINE_QUIX = (
    "Quix Streams PostgreSQLSink (upsert_on_primary_key=True, pk vertical/type/source_id, "
    f"table pre-created, schema_auto_update=False), flush every {BATCH:,} rows, same run"
)
BASELINE_SQLITE = (
    f"plain executemany INSERT into an empty SQLite table of the same DDL (WAL), {BATCH:,} "
    "rows per transaction, same run"
)
ORIENTATION = (
    "measured when the issue was written: plain COPY ~114k rows/s; COPY into a temp table "
    "and merge ~50k rows/s with 1,000-row batches, 55-76k with larger ones; executemany "
    "upsert ~30k rows/s"
)

Record = dict[str, Any]

_WORDS = ("desk", "lamp", "oak", "steel", "linen", "chair", "shelf", "vase", "rug", "brass")
_COLOURS = ("black", "white", "oak", "walnut", "grey", "green", "navy", "sand")
_TAGS = ("home", "lighting", "living", "office", "outdoor", "kitchen", "sale", "new")


@cache
def make_records(count: int) -> list[Record]:
    """``count`` records with unique keys, as the transform writes them to the records topic."""
    records: list[Record] = []
    ingestion_id, received_at = new_id(), format_time(SEED_TIME)
    for index in range(count):
        if index % 500 == 0:
            ingestion_id = new_id()
        obj = {
            "name": f"{_WORDS[index % 10]} {_WORDS[index // 10 % 10]} {index:07d}".capitalize(),
            "source_id": f"sku-{index:08d}",
            "price": round(1 + (index * 7919 % 50_000) / 100, 2),
            "currency": ("EUR", "USD", "GBP", "CHF")[index % 4],
            "tags": [_TAGS[index % 8], _TAGS[(index + 3) % 8]],
            "colour": _COLOURS[index % 8],
            "stock": index % 250,
            "weight_kg": round(0.1 + index % 300 / 10, 2),
            "description": f"{_WORDS[(index + 1) % 10]} top, {_WORDS[(index + 5) % 10]} legs, "
            f"{_COLOURS[(index + 2) % 8]} finish",
            "event_time": format_time(SEED_TIME + timedelta(seconds=index)),
        }
        meta = RawMeta(VERTICAL, TYPE, "bench", ingestion_id, new_id(), received_at)
        records.append(normalize(obj, meta, schema_version=1))
    return records


def batches(count: int) -> Iterator[range]:
    for start in range(0, count, BATCH):
        yield range(start, min(start + BATCH, count))


def _key(record: Record) -> str:
    return record_key(record["vertical"], record["type"], record["source_id"])


def drive(sink: Any, records: list[Record]) -> float:
    """Seconds to ``add`` every record and ``flush`` every BATCH, as Quix drives a sink."""
    timestamp = int(SEED_TIME.timestamp() * 1000)
    start = time.perf_counter()
    for chunk in batches(len(records)):
        for offset in chunk:
            record = records[offset]
            sink.add(record, _key(record), timestamp, [], TOPIC, 0, offset)
        sink.flush()
    return time.perf_counter() - start


def _row_values(record: Record, offset: int) -> tuple[Any, ...]:
    """The record as the sinks' row (sinks.base.ROW_COLUMNS order), ``data`` as JSON text."""
    return (
        record["vertical"],
        record["type"],
        record["source_id"],
        record["name"],
        orjson.dumps(record["vertical_data"]).decode(),
        record["source"],
        record["ingestion_id"],
        record["event_id"],
        record["event_time"],
        record["received_at"],
        record["schema_version"],
        TOPIC,
        0,
        offset,
    )


# --- PostgreSQL ------------------------------------------------------------------------


@cache
def postgres_dsn() -> str:
    """``QANAT_BENCH_POSTGRES_DSN``, else the DSN ``scripts/postgres-local.sh`` prints."""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if dsn:
        return dsn
    script = ROOT / "scripts" / "postgres-local.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"no PostgreSQL: set {DSN_ENV} or run {script}: {result.stderr.strip()[-500:]}"
        )
    return result.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class PostgresRuns:
    """Seconds per run of each PostgreSQL contender, and what explains them."""

    seconds: dict[str, list[float]]
    details: dict[str, Any]

    def best(self, contender: str) -> float:
        return min(self.seconds[contender])


class Postgres:
    """The contenders on one server; each run writes into a table of its own, dropped after."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}"

    def settings(self, table: str) -> Any:
        from sinks.postgres.settings import PostgresSinkSettings

        return PostgresSinkSettings(dsn=self.dsn, table=table)

    def drop(self, table: str) -> None:
        from psycopg import sql

        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def count(self, table: str) -> int:
        from psycopg import sql

        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
        return int(row[0]) if row else 0

    def copy(self, records: list[Record], table: str) -> float:
        """The physical reference: COPY into an empty table of the sink's DDL."""
        from psycopg import sql

        from sinks.base import ROW_COLUMNS
        from sinks.postgres.sink import ddl

        self.drop(table)
        for statement in ddl(self.settings(table)):
            self.conn.execute(statement)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS))
        )
        start = time.perf_counter()
        for chunk in batches(len(records)):
            with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for offset in chunk:
                    copy.write_row(_row_values(records[offset], offset))
        return time.perf_counter() - start

    def qanat(self, records: list[Record], table: str) -> float:
        from sinks.postgres.sink import PostgresSink

        self.drop(table)
        sink = PostgresSink(self.settings(table))
        sink.setup()
        try:
            return drive(sink, records)
        finally:
            sink.close()

    def quix(self, records: list[Record], table: str) -> float:
        try:
            from psycopg.conninfo import conninfo_to_dict
            from quixstreams.sinks.community.postgresql import PostgreSQLSink
        except ImportError as exc:
            raise RuntimeError(
                f"Quix Streams' PostgreSQLSink needs psycopg2: pip install 'quixstreams"
                f"[postgresql]' ({exc})"
            ) from exc
        from psycopg import sql

        self.drop(table)
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE {} (timestamp timestamp NOT NULL, __key text, vertical text, "
                "type text, source_id text, name text, vertical_data jsonb, source text, "
                "ingestion_id text, event_id text, event_time timestamptz, "
                "received_at timestamptz, schema_version bigint, "
                "PRIMARY KEY (vertical, type, source_id))"
            ).format(sql.Identifier(table))
        )
        info = conninfo_to_dict(self.dsn)
        sink: Any = PostgreSQLSink(  # untyped in part: setup(), _client
            host=str(info.get("host", "127.0.0.1")),
            port=int(str(info.get("port") or 5432)),
            dbname=str(info["dbname"]),
            user=str(info["user"]),
            password=str(info.get("password", "")),
            table_name=table,
            schema_auto_update=False,
            primary_key_columns=["vertical", "type", "source_id"],
            upsert_on_primary_key=True,
        )
        sink.setup()
        try:
            return drive(sink, records)
        finally:
            sink._client.close()

    def server(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        row = self.conn.execute("SHOW server_version").fetchone()
        info = conninfo_to_dict(self.dsn)
        return {
            "server_version": row[0] if row else None,
            "server": f"{info.get('host', 'localhost')}:{info.get('port', 5432)}",
        }

    def close(self) -> None:
        self.conn.close()


@cache
def measure_postgres(count: int, repeats: int) -> PostgresRuns:
    """Both PostgreSQL comparisons in one measurement: the same rows, alternating runs."""
    records = make_records(count)
    pg = Postgres(postgres_dsn())
    contenders: dict[str, Callable[[list[Record], str], float]] = {
        "copy": pg.copy,
        "qanat_postgres_sink": pg.qanat,
        "quix_postgresql_sink": pg.quix,
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for repeat in range(repeats):
            for name, run in contenders.items():
                table = f"{pg.prefix}_{name}"[:63]
                try:
                    seconds[name].append(run(records, table))
                    stored = pg.count(table)
                finally:
                    pg.drop(table)
                if stored != count:
                    raise RuntimeError(f"{name} run {repeat}: {stored} rows, expected {count}")
                logger.info("run %d: %s %.2fs", repeat, name, seconds[name][-1])
        server = pg.server()
    finally:
        pg.close()
    details = {
        **_data_details(records),
        "repeats": repeats,
        "seconds": {name: [round(s, 3) for s in runs] for name, runs in seconds.items()},
        "rows_per_s": {name: round(count / min(runs), 1) for name, runs in seconds.items()},
        **server,
        "psycopg": _version("psycopg"),
        "psycopg2": _version("psycopg2-binary"),
        "quixstreams": _version("quixstreams"),
        "orientation": ORIENTATION,
        "git_dirty": git_dirty(),
        **environment(),
    }
    return PostgresRuns(seconds, details)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _data_details(records: list[Record]) -> dict[str, Any]:
    count = len(records)
    data_bytes = sum(len(orjson.dumps(r["vertical_data"])) for r in records)
    record_bytes = sum(len(orjson.dumps(r)) for r in records)
    return {
        "records": count,
        "unique_keys": count,
        "batch_size": BATCH,
        "avg_vertical_data_bytes": round(data_bytes / count, 1),
        "avg_record_bytes": round(record_bytes / count, 1),
        "partitions": 1,
    }


def run_postgres_vs_copy(ctx: BenchContext) -> BenchResult:
    runs = measure_postgres(ctx.records or DEFAULT_RECORDS, ctx.repeats)
    count = runs.details["records"]
    return make_result(
        NAME_COPY,
        "rows/s",
        count / runs.best("qanat_postgres_sink"),
        BASELINE_COPY,
        count / runs.best("copy"),
        TARGET_COPY,
        runs.details,
    )


def run_postgres_vs_quix(ctx: BenchContext) -> BenchResult:
    runs = measure_postgres(ctx.records or DEFAULT_RECORDS, ctx.repeats)
    count = runs.details["records"]
    return make_result(
        NAME_QUIX,
        "rows/s",
        count / runs.best("qanat_postgres_sink"),
        BASELINE_QUIX,
        count / runs.best("quix_postgresql_sink"),
        TARGET_QUIX,
        runs.details,
    )


# --- SQLite ----------------------------------------------------------------------------


def _sqlite_settings(path: Path) -> SQLiteSinkSettings:
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    return SQLiteSinkSettings(path=path, table="records")


def sqlite_insert(records: list[Record], path: Path) -> tuple[float, int]:
    """The baseline: plain executemany INSERT, one transaction per BATCH rows."""
    settings = _sqlite_settings(path)
    conn = connect(settings)
    try:
        create_tables(conn, settings.table)
        insert = (
            f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        start = time.perf_counter()
        for chunk in batches(len(records)):
            updated_at = now()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, [(*_row_values(records[i], i), updated_at) for i in chunk])
            conn.execute("COMMIT")
        seconds = time.perf_counter() - start
        stored = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        conn.close()
    return seconds, int(stored)


def sqlite_sink(records: list[Record], path: Path) -> tuple[float, int]:
    sink = SQLiteSink(_sqlite_settings(path))
    sink.setup()
    try:
        seconds = drive(sink, records)
        stored = sink.connection.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        sink.close()
    return seconds, int(stored)


def run_sqlite(ctx: BenchContext) -> BenchResult:
    count = ctx.records or DEFAULT_RECORDS
    records = make_records(count)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    contenders = {"executemany_insert": sqlite_insert, "qanat_sqlite_sink": sqlite_sink}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(ctx.repeats):
        for name, run in contenders.items():
            took, stored = run(records, ctx.work_dir / f"{name}.db")
            if stored != count:
                raise RuntimeError(f"{name} run {repeat}: {stored} rows, expected {count}")
            seconds[name].append(took)
            logger.info("run %d: %s %.2fs", repeat, name, took)
    details = {
        **_data_details(records),
        "repeats": ctx.repeats,
        "seconds": {name: [round(s, 3) for s in runs] for name, runs in seconds.items()},
        "sqlite": sqlite3.sqlite_version,
        "journal_mode": "wal",
        "git_dirty": git_dirty(),
        **environment(),
    }
    return make_result(
        NAME_SQLITE,
        "rows/s",
        count / min(seconds["qanat_sqlite_sink"]),
        BASELINE_SQLITE,
        count / min(seconds["executemany_insert"]),
        None,
        details,
    )


BENCHMARKS = (
    Benchmark(
        NAME_COPY, "PostgreSQL sink vs a plain COPY of the same rows (rows/s)", run_postgres_vs_copy
    ),
    Benchmark(
        NAME_QUIX,
        "PostgreSQL sink vs Quix Streams' PostgreSQLSink with upserts (rows/s)",
        run_postgres_vs_quix,
    ),
    Benchmark(NAME_SQLITE, "SQLite sink vs a plain executemany INSERT (rows/s)", run_sqlite),
)
