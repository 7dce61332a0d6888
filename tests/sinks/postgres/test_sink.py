"""The PostgreSQL sink passes the conformance suite, plus PostgreSQL's own details.

Needs a real server: ``export QANAT_TEST_POSTGRES_DSN=$(scripts/postgres-local.sh)``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from quixstreams.sinks import SinkBackpressureError

from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.records import format_time
from sinks.base import BadRowError, UpsertSink
from sinks.postgres.conn import classify
from sinks.postgres.reader import PostgresRecordReader
from sinks.postgres.settings import PostgresSinkSettings
from sinks.postgres.sink import PostgresSink, init_db
from tests.sinks.conformance import (
    T0,
    T1,
    Key,
    ListDeadLetters,
    MakeSink,
    SinkConformance,
    deliver,
    key_of,
    record,
)

pytestmark = pytest.mark.integration


def pg_settings(dsn: str, table: str, **overrides: Any) -> PostgresSinkSettings:
    options: dict[str, Any] = {
        "dsn": dsn,
        "table": table,
        "pool_min_size": 1,
        "pool_max_size": 2,
        "connect_timeout_s": 5,
        "application_name": f"qanat-test-{uuid.uuid4().hex[:8]}",
    }
    return PostgresSinkSettings(**(options | overrides))


def read_table(dsn: str, schema: str, table: str) -> dict[Key, dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(query).fetchall()
    result = {}
    for row in rows:
        for name in ("event_time", "received_at"):
            row[name] = format_time(row[name]) if row[name] is not None else None
        result[(row["vertical"], row["type"], row["source_id"])] = row
    return result


class TestPostgresSink(SinkConformance):
    @pytest.fixture
    def make_sink(self, pg_dsn: str, pg_table: str) -> MakeSink:
        def make(dead_letters: ListDeadLetters) -> UpsertSink:
            return PostgresSink(pg_settings(pg_dsn, pg_table), dead_letters=dead_letters)

        return make

    def read_rows(self, sink: UpsertSink) -> dict[Key, dict[str, Any]]:
        assert isinstance(sink, PostgresSink)
        s = sink.settings
        return read_table(s.dsn.get_secret_value(), s.schema_name, s.table)

    def rejected_value(self) -> dict[str, Any]:
        # jsonb cannot hold U+0000: PostgreSQL answers 22P05 (untranslatable_character).
        return record("bad", vertical_data={"note": "a NUL \u0000 inside a string"})

    def handled(self, sink: UpsertSink, ingestion_id: str = "ing-1") -> int:
        assert isinstance(sink, PostgresSink)
        reader = PostgresRecordReader(sink.settings)
        try:
            return reader.handled_ingestion(ingestion_id)
        finally:
            reader.close()

    @contextmanager
    def retriable_failure(self, sink: UpsertSink) -> Iterator[None]:
        # An administrator terminates the sink's connections (57P01 / connection lost).
        assert isinstance(sink, PostgresSink)
        s = sink.settings
        with psycopg.connect(s.dsn.get_secret_value(), autocommit=True) as admin:
            pids = admin.execute(
                "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity "
                "WHERE application_name = %s",
                [s.application_name],
            ).fetchall()
            assert pids, "the sink has no open connection to terminate"
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                [[pid for _, pid in pids]],
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "terminated backends did not exit"
                time.sleep(0.05)
        yield


def test_nul_in_text_column_is_a_bad_row(pg_dsn: str, pg_table: str) -> None:
    dead = ListDeadLetters()
    sink = PostgresSink(pg_settings(pg_dsn, pg_table), dead_letters=dead)
    sink.setup()
    try:
        bad = record("bad", name="nul \x00 in a name")  # refused by psycopg before sending
        deliver(sink, (0, record("a")), (1, bad), (2, record("b")))
    finally:
        sink.close()
    assert sorted(read_table(pg_dsn, "public", pg_table)) == [
        key_of(record("a")),
        key_of(record("b")),
    ]
    assert [letter.offset for letter in dead.letters] == [1]


def test_lock_timeout_is_retriable(pg_dsn: str, pg_table: str) -> None:
    sink = PostgresSink(pg_settings(pg_dsn, pg_table, lock_timeout_ms=200))
    sink.setup()
    table = sql.Identifier("public", pg_table)
    try:
        with psycopg.connect(pg_dsn) as other:
            other.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            with pytest.raises(SinkBackpressureError):
                deliver(sink, (0, record()))  # 55P03 lock_not_available
            other.rollback()
        deliver(sink, (0, record()))
    finally:
        sink.close()
    assert list(read_table(pg_dsn, "public", pg_table)) == [key_of(record())]


def test_wrong_password_is_fatal_with_one_line(pg_dsn: str, pg_table: str) -> None:
    wrong = psycopg.conninfo.make_conninfo(pg_dsn, password="wrong-password")
    sink = PostgresSink(pg_settings(wrong, pg_table))
    with pytest.raises(FatalError) as raised:
        sink.setup()
    message = str(raised.value)
    assert "refused the connection" in message
    assert "\n" not in message and "wrong-password" not in message


def test_unreachable_server_is_fatal_at_setup(pg_table: str) -> None:
    sink = PostgresSink(pg_settings("postgresql://qanat:x@127.0.0.1:1/none", pg_table))
    with pytest.raises(FatalError, match="unreachable"):
        sink.setup()


def test_missing_privilege_is_fatal(pg_dsn: str, pg_table: str) -> None:
    sink = PostgresSink(pg_settings(pg_dsn, pg_table, schema_name="pg_catalog"))
    with pytest.raises(FatalError, match="42501"):
        sink.setup()


def test_init_db_creates_schema_and_table_idempotently(pg_dsn: str) -> None:
    schema = f"qanat_{uuid.uuid4().hex[:10]}"
    settings = pg_settings(pg_dsn, "records", schema_name=schema, create_tables=False)
    try:
        init_db(settings)
        init_db(settings)
        sink = PostgresSink(settings)
        sink.setup()
        deliver(sink, (0, record()))
        sink.close()
        rows = read_table(pg_dsn, schema, "records")
        assert list(rows) == [key_of(record())]
        with psycopg.connect(pg_dsn) as conn:
            types: dict[str, str] = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = 'records'",
                    [schema],
                ).fetchall()
            )
            indexes = {
                row[0]
                for row in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = %s", [schema]
                )
            }
        assert types["data"] == "jsonb"
        assert any(d.endswith("(ingestion_id)") for d in indexes), indexes  # ingestion status
        assert any(d.endswith("(updated_at)") for d in indexes), indexes
        assert types["event_time"] == types["updated_at"] == "timestamp with time zone"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.lookup("08006")("connection failure"), RetriableError),
        (errors.lookup("40001")("could not serialize"), RetriableError),
        (errors.lookup("40P01")("deadlock detected"), RetriableError),
        (errors.lookup("53300")("too many connections"), RetriableError),
        (errors.lookup("57P01")("admin shutdown"), RetriableError),
        (errors.lookup("55P03")("lock not available"), RetriableError),
        (psycopg.OperationalError("connection closed, no sqlstate"), RetriableError),
        (PoolTimeout("no connection in 5s"), RetriableError),
        (errors.lookup("28P01")("password authentication failed"), FatalError),
        (errors.lookup("42501")("permission denied"), FatalError),
        (errors.lookup("3D000")("database does not exist"), FatalError),
        (errors.lookup("22P05")("unsupported unicode escape"), BadRowError),
        (errors.lookup("23514")("check violation"), BadRowError),
        (psycopg.DataError("NUL bytes, no sqlstate"), BadRowError),
    ],
)
def test_errors_are_classified_by_sqlstate(error: Exception, kind: type[Exception]) -> None:
    assert type(classify(error)) is kind


def test_settings_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QANAT_POSTGRES_DSN", "postgresql://u:secret@db:5432/qanat")
    settings = PostgresSinkSettings()
    assert "secret" not in repr(settings) and settings.where() == "db:5432/qanat as u"
    assert all(f.description for f in PostgresSinkSettings.model_fields.values())
    with pytest.raises(ValidationError):
        PostgresSinkSettings(table="bad name")
    with pytest.raises(ValidationError):
        PostgresSinkSettings(pool_min_size=5, pool_max_size=2)


def test_stored_and_new_keys_in_one_batch_after_a_first_load(pg_dsn: str, pg_table: str) -> None:
    # A batch of new keys only is COPied straight into the table; one with a stored key
    # goes through the stage and the guarded upsert (the PK refuses the direct COPY).
    sink = PostgresSink(pg_settings(pg_dsn, pg_table))
    sink.setup()
    try:
        deliver(sink, (0, record("a", T1, name="a1")), (1, record("b")))
        deliver(sink, (2, record("a", T0, name="old")), (3, record("c")), (4, record("b", T1)))
        deliver(sink, (5, record("d")))  # after a conflict: through the stage for a while
    finally:
        sink.close()
    rows = read_table(pg_dsn, "public", pg_table)
    assert sorted(rows) == [key_of(record(k)) for k in "abcd"]
    assert (rows[key_of(record("a"))]["name"], rows[key_of(record("a"))]["kafka_offset"]) == (
        "a1",
        0,
    )
    assert rows[key_of(record("b"))]["kafka_offset"] == 4
    assert len({row["updated_at"] for row in rows.values()}) == 3  # one per transaction


def test_table_without_updated_at_default_still_takes_new_keys(pg_dsn: str, pg_table: str) -> None:
    settings = pg_settings(pg_dsn, pg_table, create_tables=False)
    init_db(settings)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        table = sql.Identifier("public", pg_table)
        conn.execute(sql.SQL("ALTER TABLE {} ALTER updated_at DROP DEFAULT").format(table))
    dead = ListDeadLetters()
    sink = PostgresSink(settings, dead_letters=dead)
    sink.setup()
    try:
        deliver(sink, (0, record("a")), (1, record("b")))
    finally:
        sink.close()
    assert sorted(read_table(pg_dsn, "public", pg_table)) == [key_of(record(k)) for k in "ab"]
    assert dead.letters == []
