"""Dead letters reach the real Kafka DLQ topic, and a real Quix application drives a sink."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.quixapp import quix_application
from pipelines.core.topics import record_key
from sinks.base import DeadLetter, KafkaDeadLetters
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings
from tests.kafka_helpers import consume
from tests.sinks.conformance import record

pytestmark = pytest.mark.integration


def test_kafka_dead_letters_keep_key_value_headers(kafka: KafkaSettings) -> None:
    writer = KafkaDeadLetters(kafka)
    value = record("p1", name="Lämp 🚀")
    writer.send(
        DeadLetter(
            key="shop/product/p1",
            value=value,
            headers=[("qanat.event_id", b"ev-1"), ("qanat.replay.count", b"3")],
            topic=kafka.topics.records,
            partition=1,
            offset=41,
            reason="rejected by the database (22P05)",
            details=[{"path": "$", "message": "unsupported Unicode escape sequence"}],
        )
    )
    writer.flush()
    [landed] = consume(kafka, kafka.topics.dlq, expected=1)
    assert landed.key == b"shop/product/p1"
    assert landed.value is not None and orjson.loads(landed.value) == value
    headers = landed.headers
    assert headers["qanat.event_id"] == "ev-1"
    assert headers["qanat.replay.count"] == "3"
    assert headers["qanat.error.stage"] == "sink"
    assert headers["qanat.error.reason"] == "rejected by the database (22P05)"
    assert orjson.loads(headers["qanat.error.details"])[0]["path"] == "$"
    assert headers["qanat.error.topic"] == kafka.topics.records
    assert (headers["qanat.error.partition"], headers["qanat.error.offset"]) == ("1", "41")
    assert headers["qanat.error.at"].endswith("Z")


def test_quix_application_with_sqlite_sink(kafka: KafkaSettings, tmp_path: Path) -> None:
    good, keyless, rejected = record("g1"), record("x"), record("r1", event_time="not a time")
    del keyless["source_id"]
    producer = Producer(kafka.client())
    for value in (good, keyless, rejected):
        key = record_key("shop", "product", value.get("source_id", "?"))
        producer.produce(kafka.topics.records, key=key, value=orjson.dumps(value), partition=0)
    assert producer.flush(30) == 0

    settings = SQLiteSinkSettings(path=tmp_path / "qanat.db")
    sink = SQLiteSink(settings, dead_letters=KafkaDeadLetters(kafka))
    app = quix_application(kafka, CoreSettings(data_dir=tmp_path), "sink-test")
    topic = app.topic(kafka.topics.records, value_deserializer="json", key_deserializer="str")
    app.dataframe(topic).sink(sink)
    app.run(timeout=8)
    sink.close()

    with sqlite3.connect(settings.path) as conn:
        rows = conn.execute("SELECT source_id, kafka_offset FROM records").fetchall()
    assert rows == [("g1", 0)]
    # Dead letters keep their keys, so they may land on different DLQ partitions: order them
    # by the records-topic offset they name.
    letters = sorted(
        consume(kafka, kafka.topics.dlq, expected=2),
        key=lambda m: int(m.headers["qanat.error.offset"]),
    )
    assert [m.headers["qanat.error.offset"] for m in letters] == ["1", "2"]
    assert [m.headers["qanat.error.reason"] for m in letters] == [
        "malformed record",
        "rejected by the database (SQLITE_CONSTRAINT_CHECK)",
    ]
    assert letters[1].value is not None and orjson.loads(letters[1].value) == rejected
