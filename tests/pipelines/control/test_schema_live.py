"""A running transform picks up a newly registered schema version without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawMeta
from pipelines.transform.registry import SchemaRegistry
from tests.kafka_helpers import Landed, consume
from tests.services import Services

pytestmark = pytest.mark.integration

LOOSE = {"type": "object"}
STRICT = {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}


def _send(kafka: KafkaSettings, event_id: str, value: dict[str, object]) -> None:
    meta = RawMeta("shop", "product", "test", "ing-1", event_id, "2026-01-02T03:04:05.000000Z")
    producer = Producer(kafka.client(acks="all"))
    producer.produce(
        kafka.topics.raw, key=event_id.encode(), value=orjson.dumps(value), headers=meta.headers()
    )
    assert producer.flush(10) == 0


def _by_event(landed: list[Landed]) -> dict[str, Landed]:
    return {m.headers["qanat.event_id"]: m for m in landed}


def test_running_transform_follows_a_stricter_schema(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    seeds = tmp_path / "schemas" / "shop"
    seeds.mkdir(parents=True)
    (seeds / "product.json").write_bytes(orjson.dumps(LOOSE))
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
            "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "schemas"),
            "QANAT_TRANSFORM_COMMIT_INTERVAL": "0.2",
        }
    )
    services.start("transform", "transform")

    _send(kafka, "before", {"name": "Lamp"})
    records = _by_event(consume(kafka, kafka.topics.records, 1, timeout=20, settle=0.1))
    services.check_alive()
    assert orjson.loads(records["before"].value or b"")["schema_version"] == 1

    registry = SchemaRegistry(kafka)
    try:
        assert registry.register("shop", "product", STRICT) == 2
    finally:
        registry.close()
    time.sleep(2)  # "within seconds": the follower polls the schemas topic continuously
    _send(kafka, "after-bad", {"name": "Chair"})
    _send(kafka, "after-good", {"name": "Desk", "price": 5})

    dead = _by_event(consume(kafka, kafka.topics.dlq, 1, timeout=15, settle=0.1))
    records = _by_event(consume(kafka, kafka.topics.records, 2, timeout=15, settle=0.1))
    services.check_alive()
    assert set(dead) == {"after-bad"}
    assert dead["after-bad"].headers["qanat.error.stage"] == "validate"
    details = orjson.loads(dead["after-bad"].headers["qanat.error.details"])
    assert [(d["path"], d["validator"]) for d in details] == [("$", "required")]
    assert set(records) == {"before", "after-good"}
    assert orjson.loads(records["after-good"].value or b"")["schema_version"] == 2
