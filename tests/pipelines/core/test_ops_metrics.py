"""What the sinks and sources count: upserted, dead-lettered and batch latency (a real
SQLite sink), received and produced (a real producer on the real broker); and the
dead-letter log line with its Kafka position."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pipelines.core.config import KafkaSettings
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings
from sources.base import build_raw_events
from sources.publisher import KafkaPublisher
from tests.sinks.conformance import TOPIC, deliver, record


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sink_counts_upserted_dead_lettered_and_batch_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"stage": "sink", "vertical": "shop", "type": "product"}
    upserted = _value("qanat_events_total", outcome="upserted", **labels)
    dead = _value("qanat_events_total", outcome="dead_lettered", **labels)
    malformed = _value("qanat_invalid_events_total", reason="malformed", **labels)
    batches = _value("qanat_batch_seconds_count", stage="sink")
    sink = SQLiteSink(SQLiteSinkSettings(path=tmp_path / "q.db"))
    sink.setup()
    with caplog.at_level(logging.WARNING, logger="sinks.base"):
        broken = {"vertical": "shop", "type": "product", "ingestion_id": "ing-7"}
        deliver(sink, (0, record("a")), (1, record("b")), (2, broken), partition=1)
    sink.close()
    assert _value("qanat_events_total", outcome="upserted", **labels) == upserted + 2
    assert _value("qanat_events_total", outcome="dead_lettered", **labels) == dead + 1
    assert _value("qanat_invalid_events_total", reason="malformed", **labels) == malformed + 1
    assert _value("qanat_batch_seconds_count", stage="sink") == batches + 1
    [line] = [r for r in caplog.records if r.getMessage() == "dead-lettered: malformed record"]
    assert (line.topic, line.partition, line.offset, line.ingestion_id) == (TOPIC, 1, 2, "ing-7")  # type: ignore[attr-defined]


@pytest.mark.integration
def test_source_counts_received_and_produced(kafka: KafkaSettings) -> None:
    labels = {"stage": "source", "vertical": "fleet", "type": "ping"}
    received = _value("qanat_events_total", outcome="received", **labels)
    produced = _value("qanat_events_total", outcome="produced", **labels)
    _ingestion, events = build_raw_events(
        [b'{"name": "a"}', b'{"name": "b"}'], "fleet", "ping", "t"
    )
    assert _value("qanat_events_total", outcome="received", **labels) == received + 2
    publisher = KafkaPublisher(kafka)
    try:
        asyncio.run(publisher.publish(kafka.topics.raw, events))
    finally:
        publisher.close()
    assert _value("qanat_events_total", outcome="produced", **labels) == produced + 2


@pytest.mark.integration
def test_http_source_counts_each_request_and_its_latency(kafka: KafkaSettings) -> None:
    from fastapi.testclient import TestClient

    from sources.http.app import create_app
    from sources.http.settings import HttpSourceSettings

    labels = {"stage": "source", "vertical": "fleet", "type": "beacon"}
    received = _value("qanat_events_total", outcome="received", **labels)
    produced = _value("qanat_events_total", outcome="produced", **labels)
    requests = _value("qanat_batch_seconds_count", stage="http")
    app = create_app(kafka, HttpSourceSettings(auth="none"))
    with TestClient(app) as client:
        body = {"records": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}
        answer = client.post("/api/v1/ingest/fleet/beacon/batch", json=body)
    assert answer.status_code == 202
    assert _value("qanat_events_total", outcome="received", **labels) == received + 3
    assert _value("qanat_events_total", outcome="produced", **labels) == produced + 3
    assert _value("qanat_batch_seconds_count", stage="http") == requests + 1
