"""SIGTERM under load: every service stops intake, flushes, commits and exits 0, and
nothing it acknowledged is lost.

One pipeline of real processes (HTTP source, transform, SQLite sink, errors sink) on the
real broker. The HTTP source gets SIGTERM while clients are posting: every batch it
answered 202 is in the raw topic. Then a backlog is produced straight to the raw topic and
the three consumers get SIGTERM while they work through it: below each group's committed
offset, every raw event has its record or dead letter, every record is in SQLite, and
every dead letter is in the errors table.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import decode_headers
from pipelines.devbroker import free_port
from sources.base import build_raw_events
from tests.kafka_helpers import Landed, consume
from tests.services import Services

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BATCH = 20


def _record(n: int) -> dict[str, object]:
    price = -1 if n % 10 == 0 else n  # one in ten breaks the schema: a dead letter
    return {"name": f"item {n}", "source_id": f"s{n}", "price": price}


class Load(threading.Thread):
    """Posts batches until stopped or refused; remembers what was acknowledged (202)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stopping = url, threading.Event()
        self.acknowledged: dict[str, int] = {}  # ingestion id -> events

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=10.0) as client:
            while not self.stopping.is_set():
                records = [_record(n + i) for i in range(BATCH)]
                n += BATCH
                try:
                    response = client.post(self.url, json={"records": records})
                except httpx.HTTPError:
                    continue  # the source is going away: keep trying until told to stop
                if response.status_code == 202:
                    self.acknowledged[response.json()["ingestion_id"]] = len(records)


def _committed(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(kafka.client(**{"group.id": group, "enable.auto.commit": False}))
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def _read_all(kafka: KafkaSettings, topic: str, partitions: int = 2) -> list[Landed]:
    """Every message of ``topic`` up to each partition's end, read by assignment."""
    consumer = Consumer(kafka.client(**{"group.id": "unused", "enable.auto.commit": False}))
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
        for p in range(partitions)
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    landed: list[Landed] = []
    deadline = time.monotonic() + 60
    try:
        while any(ends[p] > 0 for p in ends) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            landed.append(
                Landed(
                    message.key(),
                    message.value(),
                    decode_headers(message.headers()),
                    message.partition(),
                    message.offset(),
                )
            )
            if message.offset() + 1 >= ends[message.partition()]:
                ends[message.partition()] = 0
    finally:
        consumer.close()
    return landed


def _below(landed: list[Landed], committed: dict[int, int]) -> list[Landed]:
    return [m for m in landed if m.offset < committed.get(m.partition, -1)]


def _stored_rows(path: Path, query: str) -> set[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return set(conn.execute(query).fetchall())


def _produce_backlog(kafka: KafkaSettings, count: int) -> None:
    producer = Producer(kafka.client(**{"linger.ms": 20}))
    for start in range(0, count, 500):
        values = [orjson.dumps(_record(100_000 + n)) for n in range(start, start + 500)]
        for event in build_raw_events(values, "shop", "product", "test")[1]:
            producer.produce(kafka.topics.raw, event.value, event.key, headers=event.headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample over the series that carry ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def _stop(services: Services, name: str, timeout: float = 30.0) -> int:
    """SIGTERM one service; its exit status (it is no longer checked as alive)."""
    process = services.processes[name]
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout)
    del services.processes[name]
    return status


def test_sigterm_under_load_loses_nothing(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    http_port = free_port()
    db = tmp_path / "qanat.db"
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
        "QANAT_HTTP_PORT": str(http_port),
        "QANAT_HTTP_AUTH": "none",
        "QANAT_SQLITE_PATH": str(db),
        "QANAT_TRANSFORM_SCHEMA_DIR": str(ROOT / "schemas"),
        "QANAT_OPS_PORT": "0",
        "QANAT_OPS_SHUTDOWN_TIMEOUT_S": "20",
        "QANAT_LOG_FORMAT": "json",
    }
    services.start("source-http", "source", "http")
    services.start("transform", "transform")
    sink_ops = free_port()
    services.env |= {"QANAT_OPS_PORT": str(sink_ops), "QANAT_OPS_LAG_INTERVAL_S": "0.5"}
    services.start("sink-sqlite", "sink", "sqlite")
    services.env["QANAT_OPS_PORT"] = "0"
    services.start("sink-errors", "sink", "errors", "sqlite")
    services.wait_http(f"http://127.0.0.1:{http_port}/readyz")

    # 1. The HTTP source, while clients post.
    load = Load(f"http://127.0.0.1:{http_port}/api/v1/ingest/shop/product/batch")
    load.start()
    deadline = time.monotonic() + 30
    while len(load.acknowledged) < 25:
        assert time.monotonic() < deadline, services.log_tails()
        time.sleep(0.05)
    source_metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
    assert _stop(services, "source-http") == 0, services.log_tails()
    load.stopping.set()
    load.join(15)
    acknowledged = dict(load.acknowledged)
    raw = consume(kafka, kafka.topics.raw, sum(acknowledged.values()), timeout=30)
    in_raw: dict[str, int] = {}
    for message in raw:
        ingestion = message.headers["qanat.ingestion_id"]
        in_raw[ingestion] = in_raw.get(ingestion, 0) + 1
    lost = {i: n for i, n in acknowledged.items() if in_raw.get(i, 0) < n}
    assert not lost, f"acknowledged but not in Kafka: {lost}"
    for outcome in ("received", "produced"):
        assert _metric(source_metrics, "qanat_events_total", outcome=outcome, stage="source") > 0

    # 2. The consumers, while they work through a backlog.
    _produce_backlog(kafka, 4000)
    deadline = time.monotonic() + 60
    while not db.exists() or len(_stored_rows(db, "SELECT source_id FROM records")) < 1000:
        services.check_alive()
        assert time.monotonic() < deadline, services.log_tails()
        time.sleep(0.1)
    sink_metrics = httpx.get(f"http://127.0.0.1:{sink_ops}/metrics").text
    assert _metric(sink_metrics, "qanat_events_total", outcome="upserted", stage="sink") > 0
    assert _metric(sink_metrics, "qanat_batch_seconds_count", stage="sink") > 0
    assert "qanat_consumer_lag{" in sink_metrics
    for name in ("transform", "sink-sqlite", "sink-errors"):
        services.processes[name].send_signal(signal.SIGTERM)
    for name in ("transform", "sink-sqlite", "sink-errors"):
        assert services.processes[name].wait(30) == 0, services.log_tails()

    topics, group = kafka.topics, kafka.consumer_group
    raw, records, dlq = (_read_all(kafka, t) for t in (topics.raw, topics.records, topics.dlq))
    assert len(raw) > 4000

    transformed = _below(raw, _committed(kafka, group("transform"), topics.raw, 2))
    out = {m.headers["qanat.event_id"] for m in records + dlq}
    missing = [m.offset for m in transformed if m.headers["qanat.event_id"] not in out]
    assert transformed and not missing, f"{len(missing)} committed raw events not transformed"

    upserted = _below(records, _committed(kafka, group("sink-sqlite"), topics.records, 2))
    stored = {row[0] for row in _stored_rows(db, "SELECT source_id FROM records")}
    not_stored = [
        m.offset for m in upserted if orjson.loads(m.value or b"{}")["source_id"] not in stored
    ]
    assert upserted and not not_stored, f"{len(not_stored)} committed records not in SQLite"

    dead = _below(dlq, _committed(kafka, group("sink-errors"), topics.dlq, 2))
    kept = _stored_rows(db, "SELECT dlq_partition, dlq_offset FROM record_errors")
    absent = [m.offset for m in dead if (m.partition, m.offset) not in kept]
    assert dead and not absent, f"{len(absent)} committed dead letters not in the errors table"

    # JSON logs: every line a service logged is one JSON object with the contract's keys.
    lines = (tmp_path / "logs" / "sink-sqlite.log").read_text().splitlines()
    logged = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert logged and all({"time", "level", "logger", "message"} <= set(e) for e in logged)
    assert any(e["message"] == "Stopping the application" for e in logged)
