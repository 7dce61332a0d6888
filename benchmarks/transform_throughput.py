"""Transform throughput: the qanat transform against a passthrough Quix Streams app.

Two variants, each its own result with its own target: all records valid
(``transform_throughput_valid``, target 0.6x) and half of them invalid
(``transform_throughput_half_invalid``, target 0.5x). In each, both apps read the same raw
events from one topic on one broker: entity-shape records of about 200 bytes, valid or
invalid against the example ``shop/product`` schema, with the contract headers and keys
the sources write. The baseline passes each event's
bytes unchanged to an output topic; the transform validates, normalizes and routes to the
records topic or the DLQ. Each app runs ``repeats`` times, alternating, each run in a
consumer group of its own, timed from ``Application.run`` to its return (``count=N``: it
stops after N outputs, producer flushed); the best run of each counts.
"""

from __future__ import annotations

import gc
import logging
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.common import (
    ROOT,
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.ops import freeze_startup_heap
from pipelines.core.quixapp import quix_application
from pipelines.core.records import RawEvent, RawMeta, new_id, now, raw_event
from pipelines.core.topics import ensure_topics
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.stage import TransformSettings, build_transform_app
from pipelines.transform.transformer import Transformer

logger = logging.getLogger(__name__)

DEFAULT_RECORDS = 200_000
BASELINE = (
    "passthrough Quix Streams app (raw bytes -> output topic unchanged), same broker, data and run"
)
VERTICAL, TYPE = "shop", "product"
SCHEMA_FILE = ROOT / "schemas" / VERTICAL / f"{TYPE}.json"
INVALID_SHARE = 0.10  # of generate()'s default mix
NO_SOURCE_ID_SHARE = 0.10
EVENTS_PER_INGESTION = 500
IDLE_TIMEOUT_S = 30.0
SEED = 20260101

_WORDS = ("desk", "lamp", "oak", "steel", "linen", "chair", "shelf", "vase", "rug", "brass")
_COLOURS = ("black", "white", "oak", "walnut", "grey", "green", "navy", "sand")
_TAGS = ("home", "lighting", "living", "office", "outdoor", "kitchen", "sale", "new")
_CURRENCIES = ("EUR", "USD", "GBP", "CHF")


@dataclass(frozen=True)
class Variant:
    """One mix of valid and invalid records, reported as its own result."""

    name: str
    invalid_share: float
    target: str
    description: str


VARIANTS = (
    Variant("transform_throughput_valid", 0.0, "ratio >= 0.6", "all records valid"),
    Variant("transform_throughput_half_invalid", 0.5, "ratio >= 0.5", "half the records invalid"),
)


@dataclass(frozen=True)
class Dataset:
    """What was produced to the raw topic."""

    records: int
    valid: int
    invalid: int
    value_bytes: int
    seconds: float


def sample_record(rng: random.Random, index: int, valid: bool) -> dict[str, Any]:
    """An entity-shape product of about 200 bytes; ``valid`` against the example schema."""
    name = " ".join(rng.choice(_WORDS) for _ in range(3)).capitalize()
    record: dict[str, Any] = {"name": f"{name} {index:06d}"}
    if rng.random() >= NO_SOURCE_ID_SHARE:
        record["source_id"] = f"sku-{rng.randrange(1_000_000):07d}"
    record |= {
        "price": round(rng.uniform(1, 500), 2),
        "currency": rng.choice(_CURRENCIES),
        "tags": rng.sample(_TAGS, 2),
        "colour": rng.choice(_COLOURS),
        "stock": rng.randrange(0, 250),
        "weight_kg": round(rng.uniform(0.1, 30), 2),
        "event_time": f"2026-01-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
        f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
    }
    if not valid:
        flaw = rng.randrange(5)
        if flaw == 0:
            del record["price"]  # required property missing
        elif flaw == 1:
            record["price"] = -record["price"]  # below the minimum
        elif flaw == 2:
            record["price"] = str(record["price"])  # wrong type
        elif flaw == 3:
            record["currency"] = record["currency"].lower()  # pattern mismatch
        else:
            record["tags"] = [record["tags"][0], rng.randrange(100)]  # item of the wrong type
    return record


def generate(
    count: int, invalid_share: float = INVALID_SHARE, seed: int = SEED
) -> Iterator[tuple[RawEvent, bool]]:
    """``count`` raw events as a source writes them, each with whether it is valid."""
    rng = random.Random(seed)
    ingestion_id, received_at = new_id(), now()
    for index in range(count):
        if index % EVENTS_PER_INGESTION == 0:
            ingestion_id, received_at = new_id(), now()
        valid = rng.random() >= invalid_share
        obj = sample_record(rng, index, valid)
        meta = RawMeta(VERTICAL, TYPE, "bench", ingestion_id, new_id(), received_at)
        yield raw_event(orjson.dumps(obj), obj, meta), valid


def produce(kafka: KafkaSettings, count: int, invalid_share: float) -> Dataset:
    """Write ``count`` generated events to the raw topic; returns once Kafka has them all."""
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(
        kafka.client(
            **{
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "compression.type": "none",
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
            }
        )
    )
    valid = size = 0
    start = time.perf_counter()
    for index, (event, ok) in enumerate(generate(count, invalid_share)):
        valid += ok
        size += len(event.value)
        while True:
            try:
                producer.produce(
                    kafka.topics.raw,
                    event.value,
                    event.key.encode(),
                    headers=event.headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        if index % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - start
    if remaining or failures:
        raise RuntimeError(
            f"producing the raw events failed: {remaining} undelivered, "
            f"{len(failures)} errors, first: {failures[:1]}"
        )
    return Dataset(count, valid, count - valid, size, seconds)


def end_offset(kafka: KafkaSettings, topic: str) -> int:
    """Sum of the high watermarks of ``topic``: how many messages it ever received."""
    consumer = Consumer(
        kafka.client(**{"group.id": f"bench-probe-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def create_topic(kafka: KafkaSettings, name: str) -> None:
    admin = AdminClient(kafka.client())
    future = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor
            )
        ]
    )[name]
    future.result(timeout=30)


def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    admin = AdminClient(kafka.client())
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            logger.warning("could not delete topic %s: %s", name, exc)


def passthrough_app(kafka: KafkaSettings, core: CoreSettings, group: str, output: str) -> Any:
    """The baseline: read raw as bytes, write it unchanged (key, value, headers) to ``output``."""
    app = quix_application(kafka, core, group)
    raw = app.topic(kafka.topics.raw, value_deserializer="bytes", key_deserializer="bytes")
    out = app.topic(output, value_serializer="bytes", key_serializer="bytes")
    app.dataframe(raw).to_topic(out)
    return app


def transform_app(kafka: KafkaSettings, core: CoreSettings, group: str) -> Any:
    """The qanat transform, validating against the example product schema."""
    schema = orjson.loads(SCHEMA_FILE.read_bytes())
    transformer = Transformer(SchemaStore({(VERTICAL, TYPE): schema}))
    settings = TransformSettings(
        consumer_group=group, commit_interval=1.0, processing_guarantee="at-least-once"
    )
    return build_transform_app(kafka, core, settings, transformer=transformer)


@dataclass(frozen=True)
class Timing:
    """One app run: wall seconds, CPU seconds of the whole process (librdkafka's threads
    too) and of the main thread alone (where the Quix loop and the transform run)."""

    seconds: float
    cpu: float
    main_cpu: float


def timed_run(app: Any, count: int) -> Timing:
    """Time from ``run`` to its return, after ``count`` outputs.

    Either app runs as a qanat stage process does (:func:`pipelines.core.ops.run_quix`): the
    heap alive at start frozen out of the garbage collector's reach.
    """
    freeze_startup_heap()
    try:
        start, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        app.run(count=count, timeout=IDLE_TIMEOUT_S, collect=False)
        return Timing(
            time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - main_cpu
        )
    finally:
        gc.unfreeze()


def _per_record_us(timings: list[Timing], count: int, field: str) -> float:
    """The lowest CPU microseconds per record over the runs: the steadiest guide when the
    machine is shared, as another process's load barely changes it."""
    best: float = min(getattr(t, field) for t in timings)
    return round(best / count * 1e6, 2)


def _check(what: str, produced: int, expected: int) -> None:
    if produced < expected:
        raise RuntimeError(
            f"{what} stopped after {produced} of {expected} outputs "
            f"(idle for {IDLE_TIMEOUT_S:.0f}s?)"
        )


def run(ctx: BenchContext, variant: Variant) -> BenchResult:
    count = ctx.records or DEFAULT_RECORDS
    kafka = KafkaSettings(
        bootstrap_servers=ctx.bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:10]}"
    )
    core = CoreSettings(data_dir=ctx.work_dir / kafka.topic_prefix, log_level="WARNING")
    names = kafka.topics
    passthrough = f"{kafka.topic_prefix}.passthrough"
    ensure_topics(kafka.client(), names, kafka.partitions, kafka.replication_factor)
    create_topic(kafka, passthrough)
    try:
        data = produce(kafka, count, variant.invalid_share)
        logger.info("produced %d events in %.1fs", count, data.seconds)
        timings: dict[str, list[Timing]] = {"baseline": [], "transform": []}
        for repeat in range(ctx.repeats):
            before = end_offset(kafka, passthrough)
            app = passthrough_app(kafka, core, f"bench-baseline-{repeat}", passthrough)
            timings["baseline"].append(timed_run(app, count))
            _check(f"baseline run {repeat}", end_offset(kafka, passthrough) - before, count)

            records_start = end_offset(kafka, names.records)
            dlq_start = end_offset(kafka, names.dlq)
            app = transform_app(kafka, core, f"bench-transform-{repeat}")
            timings["transform"].append(timed_run(app, count))
            records = end_offset(kafka, names.records) - records_start
            dead = end_offset(kafka, names.dlq) - dlq_start
            _check(f"transform run {repeat}", records + dead, count)
            if (records, dead) != (data.valid, data.invalid):
                raise RuntimeError(
                    f"transform run {repeat}: {records} records and {dead} dead "
                    f"letters, expected {data.valid} and {data.invalid}"
                )
            logger.info(
                "run %d: baseline %.2fs, transform %.2fs",
                repeat,
                timings["baseline"][-1].seconds,
                timings["transform"][-1].seconds,
            )
    finally:
        delete_topics(kafka, [*names.all(), passthrough])
    seconds = {app: [t.seconds for t in runs] for app, runs in timings.items()}
    best_baseline, best_transform = min(seconds["baseline"]), min(seconds["transform"])
    details: dict[str, Any] = {
        "variant": variant.description,
        "invalid_share": variant.invalid_share,
        "records": count,
        "valid": data.valid,
        "invalid": data.invalid,
        "avg_value_bytes": round(data.value_bytes / count, 1),
        "partitions": kafka.partitions,
        "repeats": ctx.repeats,
        "seconds": {
            "baseline": [round(s, 3) for s in seconds["baseline"]],
            "transform": [round(s, 3) for s in seconds["transform"]],
        },
        "best_seconds": {
            "baseline": round(best_baseline, 3),
            "transform": round(best_transform, 3),
        },
        "cpu_seconds": {app: [round(t.cpu, 3) for t in runs] for app, runs in timings.items()},
        "main_thread_cpu_seconds": {
            app: [round(t.main_cpu, 3) for t in runs] for app, runs in timings.items()
        },
        "cpu_us_per_record": {
            app: _per_record_us(runs, count, "cpu") for app, runs in timings.items()
        },
        "main_thread_cpu_us_per_record": {
            app: _per_record_us(runs, count, "main_cpu") for app, runs in timings.items()
        },
        "produce_seconds": round(data.seconds, 3),
        "outputs_per_transform_run": {"records": data.valid, "dlq": data.invalid},
        "broker": ctx.broker,
        "quixstreams": version("quixstreams"),
        "confluent_kafka": version("confluent-kafka"),
        "git_dirty": git_dirty(),
        **environment(),
    }
    return make_result(
        variant.name,
        "records/s",
        count / best_transform,
        BASELINE,
        count / best_baseline,
        variant.target,
        details,
    )


BENCHMARKS = tuple(
    Benchmark(
        variant.name,
        f"qanat transform vs a passthrough Quix Streams app, {variant.description} (records/s)",
        partial(run, variant=variant),
    )
    for variant in VARIANTS
)
