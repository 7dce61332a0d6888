"""The transform's routing, as pure logic (the real-broker path is in tests/integration)."""

from __future__ import annotations

import gc

import orjson
import pytest
from prometheus_client import REGISTRY

from pipelines.core.deadletter import MAX_DETAILS
from pipelines.core.records import RawMeta
from pipelines.core.topics import decode_headers
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.transformer import Transformer

META = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")
SCHEMA = {
    "type": "object",
    "required": ["price"],
    "properties": {"price": {"type": "number", "minimum": 0}},
}


@pytest.fixture
def transformer() -> Transformer:
    return Transformer(SchemaStore({("shop", "product"): SCHEMA}), max_message_bytes=1000)


def test_valid_event_becomes_a_record_keyed_by_its_identity(transformer: Transformer) -> None:
    routed = transformer.process(
        b'{"name": "Lamp", "price": 3, "source_id": "p1"}',
        b"p-key",
        META.headers(),
        "qanat.raw",
        1,
        17,
    )
    assert not routed.dead
    assert routed.key == b"shop/product/p1"
    record = orjson.loads(routed.payload or b"")
    assert record["schema_version"] == 1
    assert record["vertical_data"] == {"price": 3}


def test_derived_source_id_rekeys_the_record(transformer: Transformer) -> None:
    routed = transformer.process(
        b'{"name": "Lamp", "price": 3}', b"ev-1", META.headers(), "qanat.raw", 0, 0
    )
    record = orjson.loads(routed.payload or b"")
    assert routed.key == f"shop/product/{record['source_id']}".encode()


@pytest.mark.parametrize(
    ("value", "stage", "reason"),
    [
        (b"not json", "parse", "not valid JSON"),
        (b"\xff\xfe{}", "parse", "not valid JSON"),
        (None, "parse", "empty message"),
        (b'{"name": "' + b"x" * 2000 + b'"}', "parse", "message too large"),
        (b'{"name": "Lamp", "price": -2}', "validate", "schema validation failed"),
        (b'{"price": 2}', "normalize", "missing name"),
        (b"[1, 2]", "validate", "schema validation failed"),
    ],
)
def test_bad_events_are_dead_letters_with_original_bytes(
    transformer: Transformer, value: bytes | None, stage: str, reason: str
) -> None:
    routed = transformer.process(value, b"ev-1", META.headers(), "qanat.raw", 2, 99)
    assert routed.dead
    assert routed.key == b"ev-1"
    assert routed.payload == value
    headers = decode_headers(routed.headers)
    assert headers["qanat.error.stage"] == stage
    assert headers["qanat.error.reason"].startswith(reason)
    assert headers["qanat.error.topic"] == "qanat.raw"
    assert headers["qanat.error.partition"] == "2"
    assert headers["qanat.error.offset"] == "99"
    assert headers["qanat.replay.count"] == "0"
    assert headers["qanat.event_id"] == "ev-1"  # the original headers are kept
    assert isinstance(orjson.loads(headers["qanat.error.details"]), list)


def test_validation_details_carry_every_error_path(transformer: Transformer) -> None:
    routed = transformer.process(
        b'{"name": "x", "price": "free"}', None, META.headers(), "qanat.raw", 0, 0
    )
    details = orjson.loads(decode_headers(routed.headers)["qanat.error.details"])
    assert [d["path"] for d in details] == ["$.price"]


def test_missing_and_bad_headers_are_parse_errors(transformer: Transformer) -> None:
    routed = transformer.process(b"{}", None, [], "qanat.raw", 0, 0)
    assert decode_headers(routed.headers)["qanat.error.stage"] == "parse"
    bad = RawMeta("Shop;drop", "product", "http", "i", "e", "2026-01-01T00:00:00.000000Z")
    routed = transformer.process(b'{"name": "x"}', None, bad.headers(), "qanat.raw", 0, 0)
    assert decode_headers(routed.headers)["qanat.error.reason"] == "invalid vertical header"


def test_a_replayed_dead_letter_keeps_its_replay_count(transformer: Transformer) -> None:
    headers = [*META.headers(), ("qanat.replay.count", b"2"), ("qanat.error.stage", b"validate")]
    routed = transformer.process(b"oops", None, headers, "qanat.raw", 0, 0)
    decoded = decode_headers(routed.headers)
    assert decoded["qanat.replay.count"] == "2"
    assert [name for name, _ in routed.headers].count("qanat.error.stage") == 1


def test_a_device_id_header_is_the_source_id_when_the_payload_has_none(
    transformer: Transformer,
) -> None:
    headers = [*META.headers(), ("qanat.device_id", b"sensor-7")]
    routed = transformer.process(b'{"name": "T", "price": 1}', b"k", headers, "qanat.raw", 0, 0)
    assert routed.key == b"shop/product/sensor-7"
    own = transformer.process(
        b'{"name": "T", "price": 1, "source_id": "s1"}', b"k", headers, "qanat.raw", 0, 1
    )
    assert own.key == b"shop/product/s1"


def test_a_replayed_received_at_of_another_width_becomes_fixed_width_event_time(
    transformer: Transformer,
) -> None:
    meta = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05Z")
    routed = transformer.process(b'{"name": "T", "price": 1}', b"k", meta.headers(), "r", 0, 0)
    assert orjson.loads(routed.payload or b"")["event_time"] == "2026-01-02T03:04:05.000000Z"
    bad = RawMeta("shop", "product", "http", "ing-1", "ev-1", "yesterday")
    dead = transformer.process(b'{"name": "T", "price": 1}', b"k", bad.headers(), "r", 0, 1)
    assert dead.dead
    assert decode_headers(dead.headers)["qanat.error.reason"] == "unparsable received_at header"


def _events_total(vertical: str, outcome: str) -> float:
    labels = {"stage": "transform", "outcome": outcome, "vertical": vertical, "type": "product"}
    return REGISTRY.get_sample_value("qanat_events_total", labels) or 0.0


def test_counts_reach_the_counters_whenever_they_are_read() -> None:
    vertical = "tally"  # a lane of its own: the registry is process-wide
    transformer = Transformer(SchemaStore({(vertical, "product"): SCHEMA}))
    meta = META._replace(vertical=vertical)
    for value in (b'{"name": "a", "price": 1}', b'{"name": "b", "price": 2}', b"nope"):
        transformer.process(value, None, meta.headers(), "qanat.raw", 0, 0)
    assert (_events_total(vertical, "valid"), _events_total(vertical, "invalid")) == (2, 1)
    transformer.process(b'{"name": "c", "price": 3}', None, meta.headers(), "qanat.raw", 0, 1)
    assert _events_total(vertical, "valid") == 3  # each read adds only what is new
    reason = {"stage": "transform", "vertical": vertical, "type": "product", "reason": "not_json"}
    assert REGISTRY.get_sample_value("qanat_invalid_events_total", reason) == 1
    transformer.process(b"[]", None, meta.headers(), "qanat.raw", 0, 2)
    del transformer  # a transformer that goes away leaves no count behind
    gc.collect()
    assert _events_total(vertical, "invalid") == 2


def test_error_details_stop_after_the_first_twenty() -> None:
    store = SchemaStore({("shop", "product"): {"items": {"type": "string"}}})
    routed = Transformer(store).process(
        orjson.dumps(list(range(25))), None, META.headers(), "qanat.raw", 0, 0
    )
    headers = decode_headers(routed.headers)
    details = orjson.loads(headers["qanat.error.details"])
    assert len(details) == MAX_DETAILS + 1
    assert {d["path"] for d in details[:-1]} < {f"$[{i}]" for i in range(25)}
    assert details[-1]["truncated"] == 5
    assert headers["qanat.error.reason"].startswith("schema validation failed: 25 error(s)")
