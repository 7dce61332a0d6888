"""The PostgreSQL errors sink passes the errors contract, plus PostgreSQL's own details.

Needs a real server: ``export QANAT_TEST_POSTGRES_DSN=$(scripts/postgres-local.sh)``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from pipelines.core.records import format_time
from sinks.errors import ErrorsSink, ErrorsSinkSettings
from sinks.errorstore import ErrorStore
from sinks.postgres.errors import PostgresErrorsSink, PostgresErrorStore, init_db
from sinks.postgres.settings import PostgresSinkSettings
from tests.sinks.test_errors import ErrorsSinkContract, deliver, letter_headers

pytestmark = pytest.mark.integration


def pg_settings(dsn: str, **overrides: Any) -> PostgresSinkSettings:
    options: dict[str, Any] = {
        "dsn": dsn,
        "pool_max_size": 2,
        "connect_timeout_s": 5,
        "lock_timeout_ms": 200,
        "application_name": f"qanat-test-{uuid.uuid4().hex[:8]}",
    }
    return PostgresSinkSettings(**(options | overrides))


class TestPostgresErrorsSink(ErrorsSinkContract):
    @pytest.fixture
    def settings(self, pg_dsn: str) -> PostgresSinkSettings:
        return pg_settings(pg_dsn)

    @pytest.fixture
    def errors(self, pg_table: str) -> ErrorsSinkSettings:
        return ErrorsSinkSettings(table=pg_table)  # unique per test, dropped afterwards

    @pytest.fixture
    def make_sink(
        self, settings: PostgresSinkSettings, errors: ErrorsSinkSettings
    ) -> Callable[[], ErrorsSink]:
        return lambda: PostgresErrorsSink(settings, errors)

    @pytest.fixture
    def make_store(
        self, settings: PostgresSinkSettings, errors: ErrorsSinkSettings
    ) -> Callable[[], ErrorStore]:
        return lambda: PostgresErrorStore(settings, errors)

    def read_rows(self, sink: ErrorsSink) -> list[dict[str, Any]]:
        assert isinstance(sink, PostgresErrorsSink)
        table = sql.Identifier(sink.settings.schema_name, sink.errors.table)
        query = sql.SQL("SELECT * FROM {} ORDER BY dlq_offset").format(table)
        with (
            psycopg.connect(sink.settings.dsn.get_secret_value()) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            rows = cur.execute(query).fetchall()
        for row in rows:
            for name in ("received_at", "error_at", "stored_at"):
                row[name] = format_time(row[name]) if row[name] is not None else None
        return rows

    @contextmanager
    def retriable_failure(self, sink: ErrorsSink) -> Iterator[None]:
        # Another transaction holds the table longer than the sink's lock_timeout (55P03).
        assert isinstance(sink, PostgresErrorsSink)
        table = sql.Identifier(sink.settings.schema_name, sink.errors.table)
        with psycopg.connect(sink.settings.dsn.get_secret_value()) as other:
            other.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            yield
            other.rollback()


def test_postgres_schema(pg_dsn: str, pg_table: str) -> None:
    settings, errors = pg_settings(pg_dsn), ErrorsSinkSettings(table=pg_table)
    init_db(settings, errors)
    init_db(settings, errors)  # idempotent
    with psycopg.connect(pg_dsn) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s",
                [pg_table],
            ).fetchall()
        )
        [index] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
            [pg_table, "%ingestion_id"],
        ).fetchall()
    assert (types["payload"], types["raw_key"]) == ("bytea", "bytea")
    assert (types["details"], types["headers"]) == ("jsonb", "jsonb")
    assert types["error_at"] == "timestamp with time zone"
    assert "(ingestion_id, error_at)" in index[0]


def test_sink_reconnects_after_its_connection_is_terminated(pg_dsn: str, pg_table: str) -> None:
    settings = pg_settings(pg_dsn)
    sink = PostgresErrorsSink(settings, ErrorsSinkSettings(table=pg_table))
    sink.setup()
    try:
        deliver(sink, (0, None, b"a", letter_headers()))
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            pids = admin.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [settings.application_name],
            ).fetchall()
            assert pids, "the sink has no open connection to terminate"
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                [[pid for pid, _ in pids]],
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "terminated backends did not exit"
                time.sleep(0.05)
        deliver(sink, (1, None, b"b", letter_headers()))  # the pool checks, then reconnects
    finally:
        sink.close()
    store = PostgresErrorStore(settings, ErrorsSinkSettings(table=pg_table))
    try:
        assert store.counts("ing-1")["dead_letters"] == 2
    finally:
        store.close()


def test_a_letter_the_table_refuses_is_stored_reduced_and_the_batch_lands(
    pg_dsn: str, pg_table: str
) -> None:
    """A constraint added by a DBA (ASCII-only reasons here, 23514) refuses one dead letter:
    it is stored with its text escaped and the refusal in its details, the others whole,
    and the sink does not stop (it used to raise FatalError for the whole batch)."""
    settings = pg_settings(pg_dsn)
    sink = PostgresErrorsSink(settings, ErrorsSinkSettings(table=pg_table))
    sink.setup()
    table = sql.Identifier(settings.schema_name, pg_table)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        check = sql.SQL("ALTER TABLE {} ADD CONSTRAINT ascii_reason CHECK (reason ~ '^[ -~]*$')")
        conn.execute(check.format(table))
    plain = letter_headers(event_id="ev-plain")
    accented = [
        (name, "caf\u00e9 refus\u00e9".encode() if name == "qanat.error.reason" else value)
        for name, value in letter_headers(event_id="ev-accented")
    ]
    try:
        deliver(sink, (0, b"k0", b"v0", plain), (1, b"k1", b"\xffv1", accented))
    finally:
        sink.close()
    with psycopg.connect(pg_dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        query = sql.SQL("SELECT dlq_offset, reason, payload, details FROM {} ORDER BY 1")
        rows = cur.execute(query.format(table)).fetchall()
    assert [row["dlq_offset"] for row in rows] == [0, 1]
    reduced = rows[1]
    assert reduced["reason"] == "caf\\xe9 refus\\xe9"
    assert bytes(reduced["payload"]) == b"\xffv1"  # the event's bytes, exact
    assert "23514" in reduced["details"][0]["message"]
