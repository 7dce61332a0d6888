"""processing_guarantee=exactly-once: a transform killed mid-run and restarted writes each
event once to the records topic or the DLQ, as a read_committed reader sees them."""

from __future__ import annotations

import signal
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawMeta, new_id, now, raw_event
from tests.kafka_helpers import consume
from tests.services import Services

pytestmark = pytest.mark.integration
EVENTS = 20_000


def _produce_raw(kafka: KafkaSettings) -> set[str]:
    producer = Producer(kafka.client(**{"linger.ms": 20}))
    event_ids = set()
    received_at = now()
    for index in range(EVENTS):
        meta = RawMeta("eos", "item", "test", "eos", new_id(), received_at)  # schemaless
        obj = {"name": f"n{index}", "source_id": f"s{index}"} if index % 10 else {"bad": 1}
        event = raw_event(orjson.dumps(obj), obj, meta)
        producer.produce(kafka.topics.raw, event.value, event.key, headers=event.headers)
        producer.poll(0)
        event_ids.add(meta.event_id)
    assert producer.flush(60) == 0
    return event_ids


def _committed_progress(kafka: KafkaSettings) -> int:
    """How many raw events the transform's group has committed (inside its transactions)."""
    consumer = Consumer(kafka.client(**{"group.id": kafka.consumer_group("transform")}))
    try:
        partitions = [TopicPartition(kafka.topics.raw, p) for p in range(kafka.partitions)]
        committed = consumer.committed(partitions, timeout=10)
    except KafkaException:  # the group coordinator is still loading: nothing to report yet
        return 0
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def test_killed_transform_duplicates_nothing(services: Services, kafka: KafkaSettings) -> None:
    event_ids = _produce_raw(kafka)
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_TRANSFORM_PROCESSING_GUARANTEE": "exactly-once",
        "QANAT_TRANSFORM_COMMIT_INTERVAL": "0.5",
        # The killed instance's open transaction holds back read_committed readers and its
        # group membership holds back the restart until these run out: keep them short.
        "QANAT_KAFKA_CLIENT_CONFIG": orjson.dumps(
            {"session.timeout.ms": "6000", "transaction.timeout.ms": "10000"}
        ).decode(),
    }
    first = services.start("transform", "transform")
    deadline = time.monotonic() + 120
    while _committed_progress(kafka) < EVENTS // 5:  # kill it well inside the run
        services.check_alive()
        assert time.monotonic() < deadline, services.log_tails()
        time.sleep(0.2)
    assert _committed_progress(kafka) < EVENTS, "the run ended before the kill"
    first.send_signal(signal.SIGKILL)
    first.wait()
    services.processes.pop("transform")
    services.start("transform-restarted", "transform")

    valid = EVENTS - EVENTS // 10
    records = consume(kafka, kafka.topics.records, expected=valid, timeout=180, settle=3)
    dead = consume(kafka, kafka.topics.dlq, expected=EVENTS - valid, timeout=60, settle=3)
    assert {m.headers.get("qanat.error.stage") for m in dead} == {"normalize"}
    outputs = records + dead
    seen = Counter(message.headers["qanat.event_id"] for message in outputs)
    duplicated = {event_id: n for event_id, n in seen.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} events written more than once"
    assert set(seen) == event_ids
    assert (len(records), len(dead)) == (valid, EVENTS - valid)
