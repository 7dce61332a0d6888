"""HTTP ingest: the push API's batch throughput, and its memory under a large NDJSON stream.

Both run the real service in a child process (:mod:`benchmarks.http_ingest_service`); the
client is this process.

* ``http_batch_ingest`` - records/s of ``POST /api/v1/ingest/{v}/{t}/batch`` with
  ``BATCH`` entity records per request from ``CONNECTIONS`` concurrent client connections,
  timed from the first request to the last 202 (every record acknowledged by Kafka),
  against a raw confluent-kafka ``Producer`` in one process sending the same records (same
  values, and the keys and headers ``sources.http.events.request_events`` makes, built
  before the timing) to the same topic with the service's producer settings (idempotent,
  ``acks=all``, lz4, ``linger.ms=5``), timed after one warm-up event (connection, producer
  id) to the end of its ``flush``. Each side runs ``repeats`` times, alternating; the best
  run of each counts. Target: ratio >= 0.5. The service's CPU time per run is in the details.
* ``ndjson_stream_memory`` - the service's RSS growth under a 1 GiB NDJSON stream
  (:mod:`benchmarks.http_ingest_stream`). Target: growth < 100 MB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from importlib.metadata import version
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from benchmarks.common import (
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from benchmarks.http_ingest_service import (
    SEED,
    TYPE,
    VERTICAL,
    bench_kafka,
    cpu_seconds,
    service,
)
from benchmarks.http_ingest_stream import NAME_STREAM, run_stream
from benchmarks.transform_throughput import delete_topics, end_offset, sample_record
from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawEvent
from sources.http.events import SOURCE_NAME, request_events
from sources.http.settings import HttpSourceSettings

logger = logging.getLogger(__name__)

NAME_BATCH = "http_batch_ingest"
DEFAULT_BATCH_RECORDS = 100_000
BATCH = 1_000
CONNECTIONS = 4
TARGET_BATCH = "ratio >= 0.5"
BASELINE_BATCH = (
    "raw confluent-kafka Producer in one process, same records, keys, headers, topic and "
    "producer settings (idempotent, acks=all, lz4), all deliveries awaited, same run"
)


def batch_records(count: int, seed: int = SEED) -> list[list[dict[str, Any]]]:
    """``count`` valid entity records, in batches of at most ``BATCH``."""
    rng = random.Random(seed)
    records = [sample_record(rng, index, True) for index in range(count)]
    return [records[start : start + BATCH] for start in range(0, count, BATCH)]


def batch_bodies(batches: list[list[dict[str, Any]]]) -> list[bytes]:
    return [orjson.dumps({"records": batch}) for batch in batches]


def baseline_events(batches: list[list[dict[str, Any]]]) -> list[RawEvent]:
    """The events the service makes of the batches: same values, keys and headers."""
    events: list[RawEvent] = []
    for batch in batches:
        values = [orjson.dumps(record) for record in batch]
        events += request_events(values, batch, VERTICAL, TYPE, SOURCE_NAME)[1]
    return events


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The service's producer settings (``sources.publisher.KafkaPublisher``, with the queue
    bounds ``HttpSourceSettings`` gives it by default)."""
    defaults = HttpSourceSettings.model_fields
    return kafka.client(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": defaults["producer_queue_max_messages"].default,
            "queue.buffering.max.kbytes": defaults["producer_queue_max_kbytes"].default,
        }
    )


def raw_produce(kafka: KafkaSettings, events: list[RawEvent]) -> float:
    """Seconds to produce every event and have every delivery reported."""
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(producer_config(kafka))
    topic = kafka.topics.raw
    producer.produce(topic, events[0].value, events[0].key.encode(), headers=events[0].headers)
    if producer.flush(30):  # connected, idempotent producer id acquired, before the timing
        raise RuntimeError("raw producer: the warm-up event was not delivered")
    start = time.perf_counter()
    for index, event in enumerate(events):
        while True:
            try:
                producer.produce(
                    topic,
                    event.value,
                    event.key.encode(),
                    headers=event.headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        if index % 1_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - start
    if remaining or failures:
        raise RuntimeError(f"raw producer: {remaining} undelivered, errors {failures[:1]}")
    return seconds


async def _post_batches(url: str, bodies: list[bytes], connections: int) -> float:
    path = f"{url}/api/v1/ingest/{VERTICAL}/{TYPE}/batch"
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failures: list[str] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(path, content=body, headers=headers)
            if response.status_code != 202:
                failures.append(f"{response.status_code} {response.text[:200]}")

    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await client.get(f"{url}/healthz")  # warm the connection pool's first connection
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        seconds = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} batch requests failed, first: {failures[0]}")
    return seconds


def http_post(url: str, bodies: list[bytes], connections: int = CONNECTIONS) -> float:
    """Seconds to POST every batch from ``connections`` concurrent connections, all 202."""
    return asyncio.run(_post_batches(url, bodies, connections))


def run_batch(ctx: BenchContext) -> BenchResult:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    count = ctx.records or DEFAULT_BATCH_RECORDS
    kafka = bench_kafka(ctx)
    batches = batch_records(count)
    bodies = batch_bodies(batches)
    seconds: dict[str, list[float]] = {"baseline": [], "http": []}
    service_cpu: list[float] = []
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews the timings
    try:
        with service(kafka) as svc:
            http_post(svc.url, bodies[:2])  # warm-up: imports, producer connection
            for repeat in range(ctx.repeats):
                events = baseline_events(batches)
                before = end_offset(kafka, kafka.topics.raw)
                seconds["baseline"].append(raw_produce(kafka, events))
                del events
                landed = end_offset(kafka, kafka.topics.raw) - before - 1  # - the warm-up
                if landed != count:
                    raise RuntimeError(f"baseline run {repeat}: {landed} of {count} landed")
                before = end_offset(kafka, kafka.topics.raw)
                cpu_before = cpu_seconds(svc.pid)
                seconds["http"].append(http_post(svc.url, bodies))
                service_cpu.append(cpu_seconds(svc.pid) - cpu_before)
                landed = end_offset(kafka, kafka.topics.raw) - before
                if landed != count:
                    raise RuntimeError(f"http run {repeat}: {landed} of {count} landed")
                logger.info(
                    "run %d: raw producer %.2fs, http %.2fs",
                    repeat,
                    seconds["baseline"][-1],
                    seconds["http"][-1],
                )
    finally:
        delete_topics(kafka, list(kafka.topics.all()))
    best_baseline, best_http = min(seconds["baseline"]), min(seconds["http"])
    details: dict[str, Any] = {
        "records": count,
        "records_per_request": BATCH,
        "requests": len(bodies),
        "connections": CONNECTIONS,
        "avg_body_bytes": round(sum(map(len, bodies)) / len(bodies)),
        "partitions": kafka.partitions,
        "repeats": ctx.repeats,
        "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "best_seconds": {"baseline": round(best_baseline, 3), "http": round(best_http, 3)},
        "service_cpu_seconds_per_http_run": [round(c, 2) for c in service_cpu],
        "service_cpu_share_of_best_http_run": round(
            service_cpu[seconds["http"].index(best_http)] / best_http, 2
        ),
        "service": "uvicorn (1 process) running create_app(auth=none), child process",
        "client": "httpx.AsyncClient, this process",
        "broker": ctx.broker,
        "fastapi": version("fastapi"),
        "uvicorn": version("uvicorn"),
        "confluent_kafka": version("confluent-kafka"),
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "git_dirty": git_dirty(),
        **environment(),
    }
    return make_result(
        NAME_BATCH,
        "records/s",
        count / best_http,
        BASELINE_BATCH,
        count / best_baseline,
        TARGET_BATCH,
        details,
    )


BENCHMARKS = (
    Benchmark(
        NAME_BATCH,
        "HTTP batch ingest through the service vs a raw confluent-kafka producer (records/s)",
        run_batch,
    ),
    Benchmark(
        NAME_STREAM,
        "service RSS growth while streaming a large NDJSON body (MB; default 1 GiB)",
        run_stream,
    ),
)
