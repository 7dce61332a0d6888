"""A dead letter cut to fit the DLQ (``qanat.error.truncated``) is kept, inspectable and
counted, but never replayed: its bytes are no longer the event's (real broker)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawMeta
from pipelines.core.topics import H_ERROR_TRUNCATED, ensure_topics
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.transformer import Transformer
from tests.pipelines.core.test_deadletter import dlq

pytestmark = pytest.mark.integration


def test_a_truncated_dead_letter_is_skipped_and_counted_by_replay(kafka_bootstrap: str) -> None:
    prefix = f"trunc{uuid.uuid4().hex[:10]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(kafka.client(), kafka.topics, 1, 1)
    transformer = Transformer(SchemaStore(), max_dead_letter_bytes=4096)
    producer = Producer(kafka.client())
    for i, value in enumerate((b"{not json", b'{"name": "' + b"x" * 50_000)):
        meta = RawMeta("shop", "item", "http", "ing-1", f"e{i}", "2026-01-01T00:00:00.000000Z")
        routed = transformer.process(value, f"k{i}".encode(), meta.headers(), "raw", 0, i)
        assert routed.dead
        producer.produce(kafka.topics.dlq, routed.payload, routed.key, headers=routed.headers)
    assert producer.flush(30) == 0

    shown = dlq(kafka, "show", "0:1", "--json")
    assert shown.exit_code == 0, shown.output
    letter = orjson.loads(shown.stdout)
    assert letter["headers"][H_ERROR_TRUNCATED] == str(len(b'{"name": "') + 50_000)
    assert letter["reason"] == "not valid JSON"  # why it failed survives the cut

    result = dlq(kafka, "replay", "--json")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert (summary["replayed"], summary["skipped_truncated"]) == (1, 1)
