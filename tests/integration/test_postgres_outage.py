"""PostgreSQL stopped for 60 s in the middle of a load, then started again.

The real ``qanat sink postgres`` runs as a child process against the real Kafka broker and
a real PostgreSQL server of the test's own (:class:`OwnCluster`: ``initdb`` and ``pg_ctl``
of the installed server, on a free port), which it stops with ``pg_ctl stop -m fast`` and
starts again; the shared server is never touched. Where no server binaries are installed
(a DSN from testcontainers or a remote server) the test is skipped rather than stopping a
server others use. Normalized records go straight to the records topic in waves: before,
during (several versions of the same keys, with increasing event times) and after the
outage. The sink must pause and resume without exiting, send nothing to the DLQ, and leave
exactly one row per key, each the latest version from the offset that carried it. The run
is a row of RELIABILITY.md ("PostgreSQL down 60 s"; *accepted* = acknowledged by Kafka).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawMeta, format_time, new_id, normalize, now
from pipelines.core.topics import record_key
from pipelines.devbroker import free_port
from tests.reliability.chaos import checksum
from tests.reliability.outage import end_offset, report, wait_for
from tests.reliability.results import ScenarioResult
from tests.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SCENARIO = "PostgreSQL down 60 s"
OUTAGE_S = 60.0
VERTICAL, TYPE = "shop", "product"
BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)

# (name of the wave, first key, last key + 1, version, seconds into the outage or None)
Wave = tuple[str, int, int, int, float | None]
BEFORE: list[Wave] = [("before", 0, 500, 1, None)]
DURING: list[Wave] = [
    ("outage+2s updates", 0, 500, 2, 2.0),
    ("outage+2s new", 500, 1500, 1, 2.0),
    ("outage+20s updates", 0, 200, 3, 20.0),
    ("outage+20s new", 1500, 2000, 1, 20.0),
    ("outage+40s updates", 0, 100, 4, 40.0),
    ("outage+40s updates of new", 500, 600, 2, 40.0),
]
AFTER: list[Wave] = [("after new", 2000, 2500, 1, None), ("after updates", 0, 50, 5, None)]


class OwnCluster:
    """A PostgreSQL server of the test's own, which it may stop and start: ``initdb`` in a
    temporary directory, on a free loopback port, run as ``postgres`` when the test runs as
    root (the server refuses to run as root). The shared server is never touched.

    >>> with OwnCluster.running() as cluster:                              # doctest: +SKIP
    ...     cluster.stop(); cluster.start()
    """

    def __init__(self, bindir: Path, directory: Path) -> None:
        self.bindir, self.directory, self.port = bindir, directory, free_port()
        self.data = directory / "data"
        self.dsn = f"postgresql://qanat:qanat@127.0.0.1:{self.port}/qanat_outage"

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[OwnCluster]:
        """A new cluster, started, with the database of ``dsn``; removed afterwards."""
        bindir = server_bindir()
        if bindir is None:
            pytest.skip(
                "no PostgreSQL server binaries (initdb, pg_ctl): scripts/postgres-local.sh "
                "installs them; the shared server is never stopped instead"
            )
        directory = Path(tempfile.mkdtemp(prefix="qanat-pg-outage-"))
        cluster = cls(bindir, directory)
        try:
            cluster.create()
            yield cluster
        finally:
            cluster.ctl("stop", "-m", "immediate", check=False)
            shutil.rmtree(directory, ignore_errors=True)

    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        done = subprocess.run(
            self._as_owner([str(self.bindir / tool), *args]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}")

    def ctl(self, action: str, *args: str, check: bool = True) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", *args, check=check)

    def create(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")  # KeyError: no postgres user, no server either
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        password = self.directory / "password"
        password.write_text("qanat\n")
        password.chmod(0o644)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "qanat",
            f"--pwfile={password}",
            "-A",
            "scram-sha-256",
            "--no-sync",
        )
        settings = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",  # TCP only: no socket path to share or clean
            "shared_buffers = '32MB'",
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        self.start()
        admin = self.dsn.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE qanat_outage")

    def stop(self) -> None:
        self.ctl("stop", "-m", "fast")

    def start(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            self.ctl("start", "-t", "60", "-l", str(self.directory / "server.log"))


def server_bindir() -> Path | None:
    """The newest PostgreSQL server's binaries: Debian's, else those on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if found and (found[-1].parent / "initdb").exists():
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


@pytest.fixture
def cluster() -> Iterator[OwnCluster]:
    with OwnCluster.running() as own:
        yield own


def make_record(index: int, version: int) -> dict[str, Any]:
    """Version ``version`` of entity ``index``, as ``pipelines.core.records.normalize`` makes it."""
    meta = RawMeta(VERTICAL, TYPE, "outage-test", f"ing-{version}", new_id(), now())
    obj = {
        "name": f"item {index:05d} v{version}",
        "source_id": f"id-{index:05d}",
        "price": index + version / 100,
        "event_time": format_time(BASE_TIME + timedelta(minutes=version)),
    }
    return normalize(obj, meta, schema_version=1)


class Loader:
    """Produces record waves to the records topic and remembers where each version landed."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = kafka.topics.records
        self.producer = Producer(kafka.client(acks="all", **{"enable.idempotence": True}))
        # source_id -> (version, name, partition, offset) of the newest version produced
        self.expected: dict[str, tuple[int, str, int, int]] = {}
        self.produced = self.acked = 0
        self.errors: list[str] = []

    def wave(self, first: int, end: int, version: int) -> None:
        for index in range(first, end):
            record = make_record(index, version)
            key = record_key(VERTICAL, TYPE, record["source_id"])

            def delivered(err: Any, msg: Any, record: dict[str, Any] = record) -> None:
                if err is not None:
                    self.errors.append(str(err))
                    return
                self.acked += 1
                sid = record["source_id"]
                newest = self.expected.get(sid)
                if newest is None or version > newest[0]:
                    self.expected[sid] = (version, record["name"], msg.partition(), msg.offset())

            self.producer.produce(
                self.topic, orjson.dumps(record), key.encode(), on_delivery=delivered
            )
            self.producer.poll(0)
        assert self.producer.flush(30) == 0, "records not acknowledged by Kafka"
        assert not self.errors, self.errors[:3]
        self.produced += end - first

    def expected_rows(self) -> set[tuple[str, str, int, int]]:
        return {(sid, name, p, o) for sid, (_v, name, p, o) in self.expected.items()}


def stored_rows(dsn: str, table: str) -> set[tuple[str, str, int, int]] | None:
    """(source_id, name, kafka_partition, kafka_offset) of every row; None if unreachable."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                return set()
            query = sql.SQL(
                "SELECT source_id, name, kafka_partition, kafka_offset, count(*) OVER () "
                "FROM {} WHERE vertical = %s AND type = %s"
            ).format(sql.Identifier(table))
            rows = conn.execute(query, (VERTICAL, TYPE)).fetchall()
    except psycopg.OperationalError:
        return None
    return {(r[0], r[1], r[2], r[3]) for r in rows}


def outage_result(
    loader: Loader, dsn: str, table: str, down_s: float, seconds: float
) -> ScenarioResult:
    """The run as a row of the report: what the store holds against what Kafka acked."""
    expected = loader.expected_rows()
    rows = stored_rows(dsn, table) or set()
    total = len(rows)
    if rows:
        with psycopg.connect(dsn) as conn:
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            total = int(conn.execute(count).fetchone()[0])  # type: ignore[index]
    return ScenarioResult(
        SCENARIO,
        sent=loader.produced,
        accepted=loader.acked,
        ids=len(loader.expected),
        stored=total,
        lost=len(expected - rows),
        extra=len(rows - expected),
        duplicated=total - len({row[0] for row in rows}),
        server_errors=0,
        outage_s=round(down_s, 1),
        component="PostgreSQL",
        checksum_expected=checksum((sid, f"{n} {p}:{o}") for sid, n, p, o in expected),
        checksum_stored=checksum((sid, f"{n} {p}:{o}") for sid, n, p, o in rows),
        seconds=round(seconds, 1),
    )


def test_sink_pauses_through_a_postgres_outage_and_stores_every_record_once(
    services: Services, kafka: KafkaSettings, cluster: OwnCluster, request: pytest.FixtureRequest
) -> None:
    table, dsn, began = f"outage_{uuid.uuid4().hex[:10]}", cluster.dsn, time.monotonic()
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
            "QANAT_POSTGRES_DSN": dsn,
            "QANAT_POSTGRES_TABLE": table,
        }
    )
    sink = services.start("sink-postgres", "sink", "postgres")
    loader = Loader(kafka)

    def landed() -> bool:
        return stored_rows(dsn, table) == loader.expected_rows()

    for _name, first, end, version, _at in BEFORE:
        loader.wave(first, end, version)
    wait_for("the records produced before the outage", landed, services, 60.0)

    cluster.stop()
    stopped = time.monotonic()
    assert stored_rows(dsn, table) is None, "PostgreSQL still answers"
    for _name, first, end, version, at in DURING:
        assert at is not None
        time.sleep(max(0.0, stopped + at - time.monotonic()))
        loader.wave(first, end, version)
        services.check_alive()
    while time.monotonic() - stopped < OUTAGE_S:
        services.check_alive()
        time.sleep(min(1.0, max(0.0, stopped + OUTAGE_S - time.monotonic())))
    cluster.start()
    down_s = time.monotonic() - stopped

    for _name, first, end, version, _at in AFTER:
        loader.wave(first, end, version)
    try:
        resumed_after = wait_for("every record after the restart", landed, services, 75.0)
    finally:  # a run that lost records is reported too
        result = outage_result(loader, dsn, table, down_s, time.monotonic() - began)
        report(request, result)
    print(
        f"PostgreSQL down {down_s:.1f}s; {loader.produced} records "
        f"({len(loader.expected)} keys) stored {resumed_after:.1f}s after the restart"
    )

    assert result.ok and result.stored == result.ids == 2500, result
    assert result.accepted == result.sent == 3450 and down_s >= OUTAGE_S
    with psycopg.connect(dsn) as conn:
        latest = sql.SQL("SELECT count(*) FROM {} WHERE name LIKE 'item 00000 v5'").format(
            sql.Identifier(table)
        )
        assert conn.execute(latest).fetchone() == (1,)

    assert sink.poll() is None, f"the sink exited\n{services.log_tails()}"
    log = (services.logs / "sink-postgres.log").read_text(errors="replace")
    assert re.search(r"will be retried", log), f"the sink never paused\n{log[-3000:]}"
    assert end_offset(kafka, kafka.topics.dlq) == 0, "dead letters"
