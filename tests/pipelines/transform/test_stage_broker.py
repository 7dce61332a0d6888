"""The transform application on the real broker: routing, poison messages, metrics.

The application runs in this process (``Application.run(count=...)``), so the Prometheus
counters it increments are read from the default registry, as ``/metrics`` serves them.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.records import RawMeta
from pipelines.core.topics import Headers
from pipelines.transform.lanes import REASON_CODES
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.stage import TransformSettings, build_transform_app
from pipelines.transform.transformer import Transformer
from tests.kafka_helpers import Landed, consume

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "required": ["price"],
    "properties": {"price": {"type": "number", "minimum": 0}},
}
MAX_BYTES = 300


def _events(vertical: str) -> list[tuple[str, bytes | None, Headers]]:
    """(event id, value, headers): every outcome the transform has, one or more each."""

    def headers(event_id: str, type_: str = "product") -> Headers:
        received = "2026-01-02T03:04:05.000000Z"
        return RawMeta(vertical, type_, "test", "ing-1", event_id, received).headers()

    return [
        ("ok-1", b'{"name": "Lamp", "price": 3, "source_id": "p1"}', headers("ok-1")),
        ("ok-2", b'{"name": "Desk", "price": 4}', headers("ok-2")),
        ("ok-review", b'{"name": "Nice"}', headers("ok-review", "review")),  # schemaless
        ("schema-1", b'{"name": "Chair", "price": -1}', headers("schema-1")),
        ("schema-2", b'{"name": "Chair", "price": "x"}', headers("schema-2")),
        ("not-json", b"{oops", headers("not-json")),
        ("bad-utf8", b'{"name": "\xff\xfe"}', headers("bad-utf8")),
        ("too-large", b'{"name": "' + b"x" * MAX_BYTES + b'"}', headers("too-large")),
        ("empty", None, headers("empty")),
        ("no-name", b'{"price": 2}', headers("no-name")),
        ("bad-time", b'{"name": "x", "price": 1, "date": "someday"}', headers("bad-time")),
        (
            "bad-vertical",
            b'{"name": "x"}',
            [("qanat.vertical", b"X!"), *headers("bad-vertical")[1:]],
        ),
        ("no-headers", b'{"name": "x"}', [("qanat.event_id", b"no-headers")]),
    ]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _by_event(landed: list[Landed]) -> dict[str, Landed]:
    return {m.headers["qanat.event_id"]: m for m in landed}


def test_transform_routes_dead_letters_and_counts_per_vertical_type_and_reason(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    vertical = f"m{uuid.uuid4().hex[:10]}"  # the registry is process-wide: own labels
    events = _events(vertical)
    producer = Producer(kafka.client(acks="all"))
    for event_id, value, headers in events:
        producer.produce(kafka.topics.raw, value, event_id.encode(), headers=headers)
    assert producer.flush(10) == 0

    transformer = Transformer(
        SchemaStore({(vertical, "product"): SCHEMA}), max_message_bytes=MAX_BYTES
    )
    settings = TransformSettings(consumer_group=f"g-{uuid.uuid4().hex[:8]}")
    app = build_transform_app(
        kafka, CoreSettings(data_dir=tmp_path), settings, transformer=transformer
    )
    app.run(count=len(events), timeout=30)

    records = _by_event(consume(kafka, kafka.topics.records, 3, timeout=15, settle=0.2))
    dead = _by_event(consume(kafka, kafka.topics.dlq, len(events) - 3, timeout=15, settle=0.2))
    assert set(records) == {"ok-1", "ok-2", "ok-review"}
    assert records["ok-1"].key == f"{vertical}/product/p1".encode()
    assert orjson.loads(records["ok-1"].value or b"")["schema_version"] == 1
    assert orjson.loads(records["ok-review"].value or b"")["schema_version"] is None

    stages = {event_id: m.headers["qanat.error.stage"] for event_id, m in dead.items()}
    assert stages == {
        "schema-1": "validate",
        "schema-2": "validate",
        "not-json": "parse",
        "bad-utf8": "parse",
        "too-large": "parse",
        "empty": "parse",
        "no-name": "normalize",
        "bad-time": "normalize",
        "bad-vertical": "parse",
        "no-headers": "parse",
    }
    raw = _by_event(consume(kafka, kafka.topics.raw, len(events), timeout=10, settle=0))
    sent = {event_id: (value, headers) for event_id, value, headers in events}
    for event_id, message in dead.items():  # the original key, value and headers, kept
        assert message.key == event_id.encode()
        assert message.value == sent[event_id][0]
        for name, value in sent[event_id][1]:
            assert message.headers[name] == value.decode("utf-8", "replace")
        assert message.headers["qanat.error.topic"] == kafka.topics.raw
        position = (message.headers["qanat.error.partition"], message.headers["qanat.error.offset"])
        assert position == (str(raw[event_id].partition), str(raw[event_id].offset))
    details = orjson.loads(dead["bad-time"].headers["qanat.error.details"])
    assert details[0]["path"] == "$.date"
    details = orjson.loads(dead["schema-1"].headers["qanat.error.details"])
    assert [(d["path"], d["validator"]) for d in details] == [("$.price", "minimum")]

    def events_total(outcome: str, type_: str = "product") -> float:
        labels = {"stage": "transform", "outcome": outcome, "vertical": vertical, "type": type_}
        return _sample("qanat_events_total", **labels)

    def invalid_total(reason: str, vertical_: str = vertical, type_: str = "product") -> float:
        labels = {"stage": "transform", "vertical": vertical_, "type": type_}
        return _sample("qanat_invalid_events_total", reason=reason, **labels)

    assert events_total("valid") == 2
    assert events_total("valid", "review") == 1
    assert events_total("invalid") == 8  # bad-vertical and no-headers have no vertical
    reasons = {"schema": 2, "not_json": 1, "invalid_utf8": 1, "too_large": 1, "empty": 1}
    reasons |= {"missing_name": 1, "bad_event_time": 1}
    for reason, expected in reasons.items():
        assert invalid_total(reason) == expected, reason
    assert set(reasons) <= {code for codes in REASON_CODES.values() for code in codes}
    # Without a usable vertical/type header, an event is counted under "-" (not a name).
    assert invalid_total("invalid_header", "-", "-") >= 1
    assert invalid_total("missing_headers", "-", "-") >= 1


def test_batches_keep_order_and_a_partial_batch_is_written_while_the_app_runs(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Events are transformed in batches (here of 2): the full ones are written as they
    fill, the last, partial one at the next commit, without more input and before the
    application is stopped; one entity's versions keep their order."""
    vertical = f"b{uuid.uuid4().hex[:10]}"
    producer = Producer(kafka.client(acks="all"))
    names = [f"v{i}" for i in range(5)]
    for i, name in enumerate(names):
        meta = RawMeta(vertical, "item", "test", "ing-b", f"e{i}", "2026-01-02T03:04:05.000000Z")
        value = orjson.dumps({"name": name, "source_id": "one"})
        producer.produce(kafka.topics.raw, value, f"{vertical}/item/one", headers=meta.headers())
    assert producer.flush(10) == 0

    settings = TransformSettings(
        consumer_group=f"g-{uuid.uuid4().hex[:8]}", max_batch_events=2, commit_interval=1.0
    )
    app = build_transform_app(
        kafka, CoreSettings(data_dir=tmp_path), settings, transformer=Transformer(SchemaStore())
    )
    landed: list[Landed] = []

    def watch() -> None:  # sees every record while the app runs, then stops it
        landed.extend(consume(kafka, kafka.topics.records, len(names), timeout=30, settle=0))
        app.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app.run(timeout=60)
    watcher.join(10)
    assert [orjson.loads(m.value or b"")["name"] for m in landed] == names
    assert [m.offset for m in landed] == sorted(m.offset for m in landed)
