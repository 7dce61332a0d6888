"""HTTP ingest: the push API's batch throughput, and its memory under a large NDJSON stream.

Both run the real service, ``sources.http.create_app(kafka, HttpSourceSettings(auth="none"))``
under uvicorn, in a child process (``python -m benchmarks.http_ingest serve ...``) on a free
loopback port, against the run's broker; the client is this process.

* ``http_batch_ingest`` - records/s of ``POST /api/v1/ingest/{v}/{t}/batch`` with
  ``BATCH`` entity records per request from ``CONNECTIONS`` concurrent client connections,
  timed from the first request to the last 202 (every record acknowledged by Kafka),
  against a raw confluent-kafka ``Producer`` in one process sending the same records (same
  values, and the keys and headers ``sources.base.build_raw_events`` makes, built before
  the timing) to the same topic with the service's producer settings (idempotent,
  ``acks=all``, lz4, ``linger.ms=5``), timed after one warm-up event (connection, producer
  id) to the end of its ``flush``. Each side runs ``repeats`` times, alternating; the best
  run of each counts. Target: ratio >= 0.5. The service's CPU time per run is in the details.
* ``ndjson_stream_memory`` - one NDJSON body of ``records`` lines (default: enough lines for
  1 GiB; ``QANAT_BENCH_NDJSON_MB`` sets the size instead), generated line by line as it is
  sent (never held), posted to ``/api/v1/ingest/{v}/{t}/stream``, while the service's RSS
  (``VmRSS`` of ``/proc/<pid>/status``) is sampled every ``SAMPLE_S``. The value is the RSS
  growth, peak minus before (after start-up and a small warm-up stream); the baseline is
  the body's size in MB, so the ratio is the share of the body the service held at most.
  It runs ``repeats`` times, each on a fresh service; the largest growth counts (the
  target is a bound). Target: growth < 100 MB. Throughput (MB/s, lines/s) is in the details.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from benchmarks.common import (
    ROOT,
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from benchmarks.transform_throughput import delete_topics, end_offset, sample_record
from pipelines.config import KafkaSettings
from pipelines.devbroker import free_port
from pipelines.records import RawEvent
from pipelines.topics import ensure_topics
from sources.base import build_raw_events

logger = logging.getLogger(__name__)

VERTICAL, TYPE = "shop", "product"
SOURCE = "http"
SEED = 20260202

NAME_BATCH = "http_batch_ingest"
DEFAULT_BATCH_RECORDS = 100_000
BATCH = 1_000
CONNECTIONS = 4
TARGET_BATCH = "ratio >= 0.5"
BASELINE_BATCH = (
    "raw confluent-kafka Producer in one process, same records, keys, headers, topic and "
    "producer settings (idempotent, acks=all, lz4), all deliveries awaited, same run"
)

NAME_STREAM = "ndjson_stream_memory"
SIZE_ENV = "QANAT_BENCH_NDJSON_MB"
DEFAULT_STREAM_BYTES = 1024 * 1024 * 1024  # 1 GiB
MB = 1024 * 1024
LINE_BYTES = 512  # each generated line is padded to exactly this, newline included
CHUNK_BYTES = 64 * 1024
SAMPLE_S = 0.2
TARGET_STREAM = "value < 100 MB"
BASELINE_STREAM = "size of the NDJSON body in MB (ratio = RSS growth / body size)"
STREAM_TIMEOUT_S = 900.0
START_TIMEOUT_S = 60.0


# -- the service, in a child process ---------------------------------------------------------


def serve_main(argv: Sequence[str]) -> None:
    """``python -m benchmarks.http_ingest serve --bootstrap B --prefix P --port N``."""
    import uvicorn

    from sources.http import HttpSourceSettings, create_app

    parser = argparse.ArgumentParser(prog="benchmarks.http_ingest serve")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    kafka = KafkaSettings(
        bootstrap_servers=args.bootstrap, topic_prefix=args.prefix, partitions=args.partitions
    )
    app = create_app(kafka, HttpSourceSettings(auth="none"))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


@contextmanager
def service(kafka: KafkaSettings) -> Iterator[Service]:
    """The HTTP source in a child process, ready (``/healthz`` answers); stopped after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    command = [
        sys.executable,
        "-m",
        "benchmarks.http_ingest",
        "serve",
        "--bootstrap",
        kafka.bootstrap_servers,
        "--prefix",
        kafka.topic_prefix,
        "--partitions",
        str(kafka.partitions),
        "--port",
        str(port),
    ]
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the HTTP service exited with {child.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP service did not start")
            time.sleep(0.1)
        yield Service(url, child.pid)
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def bench_kafka(ctx: BenchContext) -> KafkaSettings:
    kafka = KafkaSettings(
        bootstrap_servers=ctx.bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:10]}"
    )
    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    return kafka


# -- http_batch_ingest -----------------------------------------------------------------------


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
        events += build_raw_events(values, VERTICAL, TYPE, SOURCE, batch)[1]
    return events


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The service's producer settings (``sources.base.KafkaPublisher``, its defaults)."""
    return kafka.client(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
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


# -- ndjson_stream_memory --------------------------------------------------------------------


TEMPLATES = 1_024


def ndjson_template(rng: random.Random, index: int) -> bytes:
    """An entity record line of exactly ``LINE_BYTES`` bytes, newline included, whose
    ``source_id`` is a ``%010d`` placeholder for the line's index."""
    record = sample_record(rng, index, True)
    record["source_id"] = "ndjson-%010d"
    record["note"] = ""
    line = orjson.dumps(record)
    pad = LINE_BYTES - 1 - (len(line) + 5)  # "%010d" (5 bytes) becomes 10 digits
    if pad < 0 or line.count(b"%") != 1:
        raise ValueError(f"a generated line is over {LINE_BYTES} bytes or has a stray %")
    return line[:-2] + b"x" * pad + b'"}\n'


def ndjson_chunks(lines: int, seed: int = SEED) -> Iterator[bytes]:
    """``lines`` NDJSON lines, made as they are sent (from ``TEMPLATES`` record shapes, each
    line with its own ``source_id``), in chunks of about CHUNK_BYTES: never the whole body."""
    rng = random.Random(seed)
    templates = [ndjson_template(rng, index) for index in range(TEMPLATES)]
    per_chunk = max(1, CHUNK_BYTES // LINE_BYTES)
    for start in range(0, lines, per_chunk):
        stop = min(lines, start + per_chunk)
        yield b"".join(templates[i % TEMPLATES] % i for i in range(start, stop))


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:  # noqa: PTH123
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # noqa: PTH123
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the RSS of ``pid`` every ``interval`` seconds in a thread until stopped."""

    def __init__(self, pid: int, interval: float = SAMPLE_S) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, rss_bytes(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, rss_bytes(self.pid)))

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def post_stream(url: str, lines: int) -> tuple[dict[str, Any], float]:
    path = f"{url}/api/v1/ingest/{VERTICAL}/{TYPE}/stream"
    start = time.perf_counter()
    response = httpx.post(
        path,
        content=ndjson_chunks(lines),
        headers={"content-type": "application/x-ndjson"},
        timeout=httpx.Timeout(STREAM_TIMEOUT_S, connect=10),
    )
    seconds = time.perf_counter() - start
    if response.status_code != 202:
        raise RuntimeError(f"the stream got {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body, seconds


def stream_lines(ctx: BenchContext) -> int:
    """Lines to send: ``--records``, else ``QANAT_BENCH_NDJSON_MB``, else 1 GiB."""
    if ctx.records:
        return ctx.records
    size_mb = os.environ.get(SIZE_ENV, "").strip()
    size = int(float(size_mb) * MB) if size_mb else DEFAULT_STREAM_BYTES
    return max(1, size // LINE_BYTES)


def timeline(samples: list[tuple[float, int]], points: int = 10) -> list[list[float]]:
    """About ``points`` (seconds, RSS MB) samples spread over the run, to show its shape."""
    if not samples:
        return []
    step = max(1, len(samples) // points)
    picked = samples[::step]
    if picked[-1] != samples[-1]:
        picked.append(samples[-1])
    return [[round(t, 1), round(rss / MB, 1)] for t, rss in picked]


@dataclass(frozen=True)
class StreamRun:
    """One stream through a fresh service: its RSS around the stream, and its speed."""

    rss_started: int
    rss_before: int
    sampler: RssSampler
    seconds: float

    @property
    def growth_mb(self) -> float:
        return (self.sampler.peak - self.rss_before) / MB

    def summary(self, lines: int, body_mb: float) -> dict[str, Any]:
        samples = self.sampler.samples
        return {
            "rss_growth_mb": round(self.growth_mb, 1),
            "seconds": round(self.seconds, 2),
            "mb_per_s": round(body_mb / self.seconds, 2),
            "lines_per_s": round(lines / self.seconds),
            "rss_mb": {
                "after_start": round(self.rss_started / MB, 1),
                "before": round(self.rss_before / MB, 1),
                "peak": round(self.sampler.peak / MB, 1),
                "after": round(samples[-1][1] / MB, 1),
            },
            "samples": len(samples),
            "rss_peak_at_s": round(max(samples, key=lambda s: s[1])[0], 1),
            "rss_timeline_s_mb": timeline(samples),
        }


def stream_once(kafka: KafkaSettings, lines: int) -> StreamRun:
    """Stream ``lines`` lines to a fresh service, sampling its RSS; check they all landed."""
    with service(kafka) as svc:
        rss_started = rss_bytes(svc.pid)
        post_stream(svc.url, 2_000)  # warm-up: imports, producer connection, first buffers
        rss_before = rss_bytes(svc.pid)
        offset_before = end_offset(kafka, kafka.topics.raw)
        with RssSampler(svc.pid) as sampler:
            report, seconds = post_stream(svc.url, lines)
        landed = end_offset(kafka, kafka.topics.raw) - offset_before
    if report.get("accepted") != lines or report.get("rejected") or landed != lines:
        raise RuntimeError(
            f"{lines} lines sent, {report.get('accepted')} accepted, "
            f"{report.get('rejected')} rejected, {landed} landed in Kafka"
        )
    return StreamRun(rss_started, rss_before, sampler, seconds)


def run_stream(ctx: BenchContext) -> BenchResult:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    lines = stream_lines(ctx)
    body_bytes = lines * LINE_BYTES
    body_mb = body_bytes / MB
    load_before = round(os.getloadavg()[0], 2)
    kafka = bench_kafka(ctx)
    runs: list[StreamRun] = []
    try:
        for repeat in range(ctx.repeats):
            runs.append(stream_once(kafka, lines))
            logger.info(
                "stream %d: %.1f MB RSS growth, %.1fs",
                repeat,
                runs[-1].growth_mb,
                runs[-1].seconds,
            )
    finally:
        delete_topics(kafka, list(kafka.topics.all()))
    worst = max(runs, key=lambda run: run.growth_mb)
    fastest = min(run.seconds for run in runs)
    details: dict[str, Any] = {
        "lines": lines,
        "line_bytes": LINE_BYTES,
        "body_bytes": body_bytes,
        "body_mb": round(body_mb, 1),
        "repeats": ctx.repeats,
        "value_means": "the largest RSS growth of the repeats (each a fresh service)",
        "rss_growth_mb_per_run": [round(run.growth_mb, 1) for run in runs],
        "target_met": worst.growth_mb < 100,
        "best_mb_per_s": round(body_mb / fastest, 2),
        "best_lines_per_s": round(lines / fastest),
        "runs": [run.summary(lines, body_mb) for run in runs],
        "sample_interval_s": SAMPLE_S,
        "before_means": "after start-up and a 2,000-line warm-up stream",
        "producer_queue": "service defaults: 100,000 messages, 32 MiB",
        "service": "uvicorn (1 process) running create_app(auth=none), child process",
        "client": "httpx, body generated line by line while sent, 64 KiB chunks",
        "broker": ctx.broker,
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "git_dirty": git_dirty(),
        **environment(),
    }
    return make_result(
        NAME_STREAM,
        "MB RSS growth",
        worst.growth_mb,
        BASELINE_STREAM,
        body_mb,
        TARGET_STREAM,
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


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m benchmarks.http_ingest serve --bootstrap B --prefix P --port N")
    serve_main(sys.argv[2:])
