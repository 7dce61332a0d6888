"""``ndjson_stream_memory``: the service's memory under a large NDJSON stream.

One NDJSON body of ``records`` lines (default: enough lines for 1 GiB;
``QANAT_BENCH_NDJSON_MB`` sets the size instead), generated line by line as it is sent
(never held), posted to ``/api/v1/ingest/{v}/{t}/stream`` of the service
(:mod:`benchmarks.http_ingest_service`), while its RSS (``VmRSS`` of
``/proc/<pid>/status``) is sampled every ``SAMPLE_S``. The value is the RSS growth, peak
minus before (after start-up and a small warm-up stream); the baseline is the body's size
in MB, so the ratio is the share of the body the service held at most. It runs
``repeats`` times, each on a fresh service; the largest growth counts (the target is a
bound). Target: growth < 100 MB. Throughput (MB/s, lines/s) is in the details.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from benchmarks.common import BenchContext, BenchResult, environment, git_dirty, make_result
from benchmarks.http_ingest_service import (
    SEED,
    TYPE,
    VERTICAL,
    bench_kafka,
    rss_bytes,
    service,
)
from benchmarks.transform_throughput import delete_topics, end_offset, sample_record
from pipelines.core.config import KafkaSettings
from sources.http.settings import HttpSourceSettings

logger = logging.getLogger(__name__)

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
        "producer_queue": _queue_defaults(),
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


def _queue_defaults() -> str:
    defaults = HttpSourceSettings.model_fields
    messages = defaults["producer_queue_max_messages"].default
    kbytes = defaults["producer_queue_max_kbytes"].default
    return f"service defaults: {messages:,} messages, {kbytes // 1024} MiB"
