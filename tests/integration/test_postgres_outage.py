"""PostgreSQL stopped for 60 s in the middle of a load, then started again.

The real ``qanat sink postgres`` runs as a child process against the real Kafka broker and
the real (Debian) PostgreSQL server, which this test stops with ``pg_ctlcluster … stop -m
fast`` and starts again. Normalized records go straight to the records topic in waves:
before, during (several versions of the same keys, with increasing event times) and after
the outage. The sink must pause and resume without exiting, send nothing to the DLQ, and
leave exactly one row per key, each the latest version from the offset that carried it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pipelines.config import KafkaSettings
from pipelines.records import RawMeta, format_time, new_id, normalize, now
from pipelines.topics import record_key
from tests.kafka_helpers import consume
from tests.services import Services

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0
VERTICAL, TYPE = "shop", "product"
BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}

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


@dataclass(frozen=True)
class Cluster:
    """A Debian PostgreSQL cluster (``pg_lsclusters``) this process may stop and start."""

    version: str
    name: str

    def _ctl(self, action: str, *extra: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, action, *extra],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def online(self) -> bool:
        for fields in _clusters():
            if fields[:2] == [self.version, self.name]:
                return fields[3].startswith("online")
        return False

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        if not self.online():
            self._ctl("start")


def _clusters() -> list[list[str]]:
    out = subprocess.run(
        ["pg_lsclusters", "-h"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def local_cluster(dsn: str) -> Cluster | str:
    """The Debian cluster serving ``dsn``, or why there is none this test may restart."""
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "")
    if host not in LOCAL_HOSTS and not host.startswith("/"):
        return f"the PostgreSQL DSN points at {host!r}, not at a local Debian cluster"
    if not (shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster")):
        return "pg_lsclusters/pg_ctlcluster not found: not a Debian PostgreSQL server"
    port = str(info.get("port") or "5432")
    for fields in _clusters():  # version, name, port, status, owner, data directory, log
        if len(fields) >= 6 and fields[2] == port and fields[3].startswith("online"):
            owner_uid = Path(fields[5]).stat().st_uid
            if os.geteuid() not in (0, owner_uid):
                return f"cluster {fields[0]}/{fields[1]} belongs to another user"
            return Cluster(fields[0], fields[1])
    return f"no online Debian cluster listens on port {port} (testcontainers or a remote DSN?)"


@pytest.fixture
def cluster(postgres_dsn: str) -> Iterator[Cluster]:
    """The cluster behind ``postgres_dsn``; always running again after the test."""
    found = local_cluster(postgres_dsn)
    if isinstance(found, str):
        pytest.skip(f"cannot stop and start PostgreSQL here: {found}")
    try:
        yield found
    finally:
        found.start()
        _wait_until_answers(postgres_dsn, 60.0)


def _wait_until_answers(dsn: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def make_record(index: int, version: int) -> dict[str, Any]:
    """Version ``version`` of entity ``index``, as ``pipelines.records.normalize`` makes it."""
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
        self.produced = 0
        self.errors: list[str] = []

    def wave(self, first: int, end: int, version: int) -> None:
        for index in range(first, end):
            record = make_record(index, version)
            key = record_key(VERTICAL, TYPE, record["source_id"])

            def delivered(err: Any, msg: Any, record: dict[str, Any] = record) -> None:
                if err is not None:
                    self.errors.append(str(err))
                    return
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


def wait_for(what: str, check: Callable[[], bool], services: Services, timeout: float) -> float:
    """Seconds until ``check()``; fails if it takes longer or a service exits."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        services.check_alive()
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}\n{services.log_tails()}"
    )


def end_offsets(kafka: KafkaSettings, topic: str) -> int:
    consumer = Consumer(kafka.client(**{"group.id": f"probe-{uuid.uuid4().hex}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def test_sink_pauses_through_a_postgres_outage_and_stores_every_record_once(
    services: Services, kafka: KafkaSettings, postgres_dsn: str, cluster: Cluster
) -> None:
    table = f"outage_{uuid.uuid4().hex[:10]}"
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
            "QANAT_POSTGRES_DSN": postgres_dsn,
            "QANAT_POSTGRES_TABLE": table,
        }
    )
    sink = services.start("sink-postgres", "sink", "postgres")
    loader = Loader(kafka)

    def landed() -> bool:
        return stored_rows(postgres_dsn, table) == loader.expected_rows()

    try:
        for _name, first, end, version, _at in BEFORE:
            loader.wave(first, end, version)
        wait_for("the records produced before the outage", landed, services, 60.0)

        cluster.stop()
        stopped = time.monotonic()
        assert stored_rows(postgres_dsn, table) is None, "PostgreSQL still answers"
        for _name, first, end, version, at in DURING:
            assert at is not None
            time.sleep(max(0.0, stopped + at - time.monotonic()))
            loader.wave(first, end, version)
            services.check_alive()
        while time.monotonic() - stopped < OUTAGE_S:
            services.check_alive()
            time.sleep(1.0)
        cluster.start()
        restarted = time.monotonic()

        for _name, first, end, version, _at in AFTER:
            loader.wave(first, end, version)
        resumed_after = wait_for("every record after the restart", landed, services, 75.0)
        print(
            f"PostgreSQL down {restarted - stopped:.1f}s; {loader.produced} records "
            f"({len(loader.expected)} keys) stored {resumed_after:.1f}s after the restart"
        )
    finally:
        cluster.start()

    rows = stored_rows(postgres_dsn, table)
    assert rows is not None
    assert len(rows) == len(loader.expected) == 2500
    assert rows == loader.expected_rows()
    with psycopg.connect(postgres_dsn) as conn:
        query = sql.SQL("SELECT count(*), count(DISTINCT source_id) FROM {}").format(
            sql.Identifier(table)
        )
        assert conn.execute(query).fetchone() == (2500, 2500)
        latest = sql.SQL("SELECT count(*) FROM {} WHERE name LIKE 'item 00000 v5'").format(
            sql.Identifier(table)
        )
        assert conn.execute(latest).fetchone() == (1,)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))

    assert sink.poll() is None, f"the sink exited\n{services.log_tails()}"
    log = (services.logs / "sink-postgres.log").read_text(errors="replace")
    assert re.search(r"will be retried", log), f"the sink never paused\n{log[-3000:]}"
    assert end_offsets(kafka, kafka.topics.dlq) == 0
    assert consume(kafka, kafka.topics.dlq, expected=0, timeout=30.0, settle=5.0) == []
