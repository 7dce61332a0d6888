"""DLQ replay throughput: ``qanat dlq replay`` against a raw confluent-kafka copy.

Each repeat gets a DLQ topic of its own, filled with the same ``N`` dead letters (about
200-byte JSON values, the contract headers and the error headers the transform adds).
The baseline reads them with a plain confluent-kafka consumer (assign + consume in
batches, to the end offsets) and produces each one, key, value and headers unchanged, to
another topic, then flushes. qanat's :class:`pipelines.dlq.replay.Replayer` does what
``qanat dlq replay`` does: loads the DLQ state, scans and filters the DLQ, rewrites the
headers, and republishes to the raw topic in Kafka transactions with its checkpoint,
timed from start to its last commit. Baseline and replay alternate; the best of each
counts. Target: replay >= 0.5x the baseline's records/s. The details also keep each run's
CPU seconds and wall-time ratio, steadier than the best-of wall time on a busy machine.
"""

from __future__ import annotations

import logging
import resource
import time
import uuid
from importlib.metadata import version
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from benchmarks.common import (
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from benchmarks.transform_throughput import create_topic, delete_topics
from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import dead_letter_headers
from pipelines.core.records import RawMeta
from pipelines.core.topics import ensure_topics
from pipelines.dlq.replay import Replayer, ReplayOptions

logger = logging.getLogger(__name__)

NAME = "dlq_replay"
DEFAULT_RECORDS = 100_000
TARGET = "ratio >= 0.5"
BASELINE = "raw confluent-kafka consume + produce of the same dead letters, same broker and run"


def seed(kafka: KafkaSettings, count: int) -> int:
    """``count`` dead letters in the DLQ topic; returns the bytes of their values."""
    producer = Producer(kafka.client(**{"linger.ms": 20, "batch.size": 1_000_000}))
    total = 0
    for i in range(count):
        meta = RawMeta(
            "shop", "product", "http", f"ing-{i // 500}", f"ev-{i}", "2026-01-01T00:00:00.000000Z"
        )
        value = orjson.dumps(
            {
                "name": f"desk lamp {i}",
                "source_id": f"p{i}",
                "price": str(i % 1000),
                "colour": "walnut",
                "tags": ["home", "lighting"],
                "description": "an oak desk lamp with a linen shade",
            }
        )
        headers = dead_letter_headers(
            meta.headers(),
            stage="validate",
            reason="schema validation failed: 1 error(s), first at $.price",
            details=[{"path": "$.price", "message": "'1' is not of type 'number'"}],
            topic=kafka.topics.raw,
            partition=i % kafka.partitions,
            offset=i,
        )
        total += len(value)
        while True:
            try:
                producer.produce(kafka.topics.dlq, value, f"ev-{i}".encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) > 0:
        raise RuntimeError("seeding the DLQ did not finish")
    return total


def raw_copy(kafka: KafkaSettings, target: str, count: int) -> float:
    """Seconds to consume every dead letter and produce it unchanged to ``target``."""
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": f"bench-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )
    producer = Producer(kafka.client(**{"linger.ms": 5}))
    started = time.perf_counter()
    partitions = sorted(
        consumer.list_topics(kafka.topics.dlq, 10).topics[kafka.topics.dlq].partitions
    )
    consumer.assign([TopicPartition(kafka.topics.dlq, p, 0) for p in partitions])
    done: set[int] = set()
    copied = 0
    while len(done) < len(partitions):
        for message in consumer.consume(1000, 0.1):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(message.partition())
                continue
            while True:
                try:
                    producer.produce(
                        target, message.value(), message.key(), headers=message.headers()
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
    if producer.flush(60) > 0:
        raise RuntimeError("the baseline's producer did not finish")
    seconds = time.perf_counter() - started
    consumer.close()
    if copied != count:
        raise RuntimeError(f"baseline copied {copied} of {count}")
    return seconds


def replay(kafka: KafkaSettings, count: int) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    summary = Replayer(kafka, ReplayOptions(replay_id=f"bench-{uuid.uuid4().hex[:8]}")).run()
    seconds = time.perf_counter() - started
    if summary.replayed != count:
        raise RuntimeError(f"replay republished {summary.replayed} of {count}: {summary}")
    return seconds, summary.to_json()


def _cpu() -> float:
    """CPU seconds of this process (every thread): steadier than wall time on a busy box."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(ctx: BenchContext) -> BenchResult:
    count = ctx.records or DEFAULT_RECORDS
    seconds: dict[str, list[float]] = {"baseline": [], "replay": []}
    cpu: dict[str, list[float]] = {"baseline": [], "replay": []}
    value_bytes, partitions = 0, 0
    summary: dict[str, Any] = {}
    for repeat in range(ctx.repeats):
        kafka = KafkaSettings(
            bootstrap_servers=ctx.bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:10]}"
        )
        partitions = kafka.partitions
        copy = f"{kafka.topic_prefix}.copy"
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
        try:
            create_topic(kafka, copy)
            value_bytes = seed(kafka, count)
            started = _cpu()
            seconds["baseline"].append(raw_copy(kafka, copy, count))
            cpu["baseline"].append(_cpu() - started)
            started = _cpu()
            took, summary = replay(kafka, count)
            cpu["replay"].append(_cpu() - started)
            seconds["replay"].append(took)
            logger.info(
                "run %d: baseline %.2fs, replay %.2fs", repeat, seconds["baseline"][-1], took
            )
        finally:
            delete_topics(kafka, [*kafka.topics.all(), kafka.topics.dlq_state, copy])
    best_baseline, best_replay = min(seconds["baseline"]), min(seconds["replay"])
    details: dict[str, Any] = {
        "records": count,
        "avg_value_bytes": round(value_bytes / count, 1),
        "partitions": partitions,
        "repeats": ctx.repeats,
        "seconds": {name: [round(s, 3) for s in runs] for name, runs in seconds.items()},
        "best_seconds": {"baseline": round(best_baseline, 3), "replay": round(best_replay, 3)},
        "cpu_seconds": {name: [round(s, 3) for s in runs] for name, runs in cpu.items()},
        "per_run_ratios": [
            round(b / r, 3) for b, r in zip(seconds["baseline"], seconds["replay"], strict=True)
        ],
        "replay_summary": summary,
        "broker": ctx.broker,
        "confluent_kafka": version("confluent-kafka"),
        "git_dirty": git_dirty(),
        **environment(),
    }
    return make_result(
        NAME, "records/s", count / best_replay, BASELINE, count / best_baseline, TARGET, details
    )


BENCHMARKS = (
    Benchmark(
        NAME,
        "qanat dlq replay vs a raw confluent-kafka consume + produce (records/s)",
        run,
    ),
)
