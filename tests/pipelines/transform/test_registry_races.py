"""The schema registry under concurrent writers and with foreign records in its topic.

Two registries (two control-plane replicas) that read the same latest version and then
propose the next one at the same moment: the topic's order picks one, the other moves on
to the next version, and every reader agrees on what each version is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.core.config import KafkaSettings
from pipelines.transform.registry import SchemaConflictError, SchemaFollower, SchemaRegistry
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.schematopic import SchemaVersion, schema_key
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

V1 = {"type": "object"}
A = {"type": "object", "required": ["a"]}
B = {"type": "object", "required": ["b"]}


class _InStep(SchemaRegistry):
    """A registry whose first write waits until the other writer is about to write too,
    so both have read the same latest version: the race, every time."""

    def __init__(self, kafka: KafkaSettings, barrier: threading.Barrier, **options: Any):
        super().__init__(kafka, **options)
        self.barrier = barrier

    def _produce(self, key: str, entry: SchemaVersion) -> None:
        if self.barrier is not None:
            self.barrier.wait(10)
            self.barrier = None  # type: ignore[assignment]
        super()._produce(key, entry)


@pytest.fixture
def racers(kafka: KafkaSettings) -> Iterator[tuple[SchemaRegistry, SchemaRegistry]]:
    first = SchemaRegistry(kafka)
    assert first.register("shop", "product", V1) == 1
    first.close()
    barrier = threading.Barrier(2)
    pair = (_InStep(kafka, barrier), _InStep(kafka, barrier))
    yield pair
    for registry in pair:
        registry.close()


def _race(racers: tuple[SchemaRegistry, SchemaRegistry], schemas: tuple[Any, Any]) -> list[Any]:
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(registry.put, "shop", "product", schema)
            for registry, schema in zip(racers, schemas, strict=True)
        ]
        return [future.result(timeout=30) for future in futures]


def test_racing_writers_get_distinct_versions_and_every_reader_agrees(
    kafka: KafkaSettings, racers: tuple[SchemaRegistry, SchemaRegistry]
) -> None:
    outcomes = _race(racers, (A, B))
    assert sorted(version for version, _ in outcomes) == [2, 3]
    assert all(written for _, written in outcomes)
    by_version = {version: schema for (version, _), schema in zip(outcomes, (A, B), strict=True)}

    reader = SchemaRegistry(kafka)  # a new process, from the topic alone
    try:
        assert reader.versions("shop", "product") == [1, 2, 3]
        for version in (2, 3):
            found = reader.get("shop", "product", version)
            assert found is not None
            assert found.schema == by_version[version]
    finally:
        reader.close()
    store = SchemaStore()
    follower = SchemaFollower(kafka, store).start()
    follower.stop()
    assert store.version("shop", "product") == 3
    assert store.validate("shop", "product", {})[1][0]["message"] == (
        f'"{by_version[3]["required"][0]}" is a required property'
    )
    # version 1, both proposals of version 2, and the loser's version 3
    assert len(consume(kafka, kafka.topics.schemas, 4, timeout=10, settle=0.5)) == 4


def test_racing_writers_of_the_same_schema_share_one_version(
    racers: tuple[SchemaRegistry, SchemaRegistry],
) -> None:
    outcomes = _race(racers, (A, A))
    assert sorted(outcomes) == [(2, False), (2, True)]
    assert racers[0].versions("shop", "product") == [1, 2]


def test_a_writer_out_of_attempts_reports_the_conflict(kafka: KafkaSettings) -> None:
    first = SchemaRegistry(kafka)
    first.register("shop", "product", V1)
    first.close()
    barrier = threading.Barrier(2)
    patient, hasty = _InStep(kafka, barrier), _InStep(kafka, barrier, attempts=1)
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = {
                name: pool.submit(registry.put, "shop", "product", schema)
                for name, registry, schema in (("p", patient, A), ("h", hasty, B))
            }
            results: dict[str, Any] = {}
            for name, future in futures.items():
                try:
                    results[name] = future.result(timeout=30)
                except SchemaConflictError as exc:
                    results[name] = exc
        # One of the two lost version 2; only the one allowed a retry may move on.
        if isinstance(results["h"], SchemaConflictError):
            assert results["p"] == (2, True)
            assert "try again" in str(results["h"])
        else:
            assert results["h"] == (2, True)
            assert results["p"] == (3, True)
    finally:
        patient.close()
        hasty.close()


def test_tombstones_and_malformed_records_are_skipped(
    kafka: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    registry = SchemaRegistry(kafka)
    store = SchemaStore()
    follower: SchemaFollower | None = None
    try:
        assert registry.register("shop", "product", V1) == 1
        _write_junk(kafka, "before")
        follower = SchemaFollower(kafka, store).start()  # reads past the junk at start
        assert store.version("shop", "product") == 1

        _write_junk(kafka, "after")  # and while it follows
        assert registry.register("shop", "product", A) == 2
        deadline = time.monotonic() + 10
        while store.version("shop", "product") != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.version("shop", "product") == 2
        assert follower._thread.is_alive()
        assert follower._failure is None  # nothing made it start over

        other = SchemaRegistry(kafka)
        try:
            assert other.versions("shop", "product") == [1, 2]
            assert [(s.vertical, s.type, s.version) for s in other.list()] == [
                ("shop", "product", 2)
            ]
        finally:
            other.close()
    finally:
        if follower is not None:
            follower.stop()
        registry.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("skipping schemas message" in w for w in warnings)
    assert any("tombstone" in w for w in warnings)


def _write_junk(kafka: KafkaSettings, tag: str) -> None:
    """Records a schemas topic may hold that are no schema version (or no valid one)."""
    producer = Producer(kafka.client(acks="all"))
    junk: list[tuple[bytes | None, bytes | None]] = [
        (f"{tag}/tombstone".encode(), None),
        (schema_key("shop", "gone", 1).encode(), None),  # a tombstone of no version
        (b"shop/product/00000005", b"not json"),
        (b"shop/product/00000009", b"[1, 2]"),
        (b"x", orjson.dumps({"vertical": "shop", "type": "product", "version": "two"})),
        (b"y", orjson.dumps({"vertical": "Shop!", "type": "p", "version": 3, "schema": {}})),
        (b"z", b"\xff\xfe"),
        (  # well-formed, but not a JSON Schema: the follower keeps what it has
            b"shop/product/00000099/bad",
            orjson.dumps(
                {"vertical": "shop", "type": "product", "version": 99, "schema": {"type": 5}}
            ),
        ),
    ]
    failures: list[object] = []  # (a compacted topic refuses a keyless record: none here)

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(error)

    for key, value in junk:
        producer.produce(kafka.topics.schemas, value, key, on_delivery=delivered)
    assert producer.flush(10) == 0
    assert not failures
