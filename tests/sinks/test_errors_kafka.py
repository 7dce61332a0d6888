"""Real dead letters on the DLQ topic, stored by the errors sink in a real Quix application."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.quixapp import quix_application
from sinks.sqlite.errors import SQLiteErrorsSink, SQLiteErrorStore
from sinks.sqlite.sink import SQLiteSinkSettings
from tests.sinks.test_errors import DETAILS, T0, letter_headers

pytestmark = pytest.mark.integration


def test_quix_application_stores_dead_letters(kafka: KafkaSettings, tmp_path: Path) -> None:
    dlq = kafka.topics.dlq
    poison = b"\x00\xff binary, no headers"
    producer = Producer(kafka.client())
    producer.produce(
        dlq,
        key=b"shop/product/p1",
        value=b'{"price": "x"}',
        partition=0,
        headers=letter_headers("ing-A", "ev-1", "validate", offset=3),
    )
    producer.produce(
        dlq,
        key=None,
        value=b"not json",
        partition=1,
        headers=letter_headers("ing-A", "ev-2", "parse", offset=4),
    )
    producer.produce(
        dlq,
        key=None,
        value=None,
        partition=1,
        headers=letter_headers("ing-B", "ev-3", "parse", offset=5),
    )
    producer.produce(dlq, key=None, value=poison, partition=0)
    assert producer.flush(30) == 0

    settings = SQLiteSinkSettings(path=tmp_path / "qanat.db")
    sink = SQLiteErrorsSink(settings)
    app = quix_application(kafka, CoreSettings(data_dir=tmp_path), "sink-errors")
    topic = app.topic(dlq, value_deserializer="bytes", key_deserializer="bytes")
    app.dataframe(topic).sink(sink)
    app.run(timeout=8)
    sink.close()

    store = SQLiteErrorStore(settings)
    assert store.counts("ing-A") == {
        "ingestion_id": "ing-A",
        "invalid": 2,
        "dead_letters": 2,
        "by_stage": {"parse": 1, "validate": 1},
    }
    errors = sorted(store.errors("ing-A"), key=lambda e: e["event_id"])
    assert [(e["event_id"], e["stage"], e["payload"]) for e in errors] == [
        ("ev-1", "validate", '{"price": "x"}'),
        ("ev-2", "parse", "not json"),
    ]
    assert errors[0]["details"] == DETAILS and errors[0]["received_at"] == T0
    assert (errors[0]["key"], errors[0]["source_offset"]) == ("shop/product/p1", 3)
    assert (errors[0]["dlq_topic"], errors[0]["dlq_partition"]) == (dlq, 0)
    tombstone = store.errors("ing-B")
    assert [(e["event_id"], e["payload"]) for e in tombstone] == [("ev-3", None)]
    with sqlite3.connect(settings.path) as conn:
        rows = conn.execute(
            "SELECT payload, ingestion_id, stage FROM record_errors WHERE ingestion_id IS NULL"
        ).fetchall()
    assert rows == [(poison, None, None)]
