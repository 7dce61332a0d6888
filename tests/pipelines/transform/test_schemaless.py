"""Events of a vertical/type with no schema: accepted by default, or rejected to the DLQ."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from pipelines.core.records import RawMeta
from pipelines.core.topics import decode_headers
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.stage import TransformSettings
from pipelines.transform.transformer import NO_SCHEMA, Transformer

META = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")
OTHER = META._replace(type="review")
EVENT = b'{"name": "Lamp", "price": 3, "source_id": "p1"}'
STORE = {("shop", "review"): {"type": "object"}}


def test_schemaless_is_accepted_by_default() -> None:
    assert TransformSettings().schemaless == "accept"
    routed = Transformer(SchemaStore(STORE)).process(EVENT, b"k", META.headers(), "raw", 0, 1)
    assert not routed.dead
    assert orjson.loads(routed.payload or b"")["schema_version"] is None


def test_schemaless_rejected_goes_to_the_dlq_at_validate() -> None:
    transformer = Transformer(SchemaStore(STORE), schemaless="reject")
    routed = transformer.process(EVENT, b"k", META.headers(), "raw", 1, 7)
    assert routed.dead
    assert routed.payload == EVENT
    assert routed.key == b"k"
    headers = decode_headers(routed.headers)
    assert headers["qanat.error.stage"] == "validate"
    assert headers["qanat.error.reason"] == NO_SCHEMA == "no schema registered"
    assert orjson.loads(headers["qanat.error.details"])[0]["path"] == "$"
    assert headers["qanat.error.offset"] == "7"


def test_reject_keeps_types_that_have_a_schema() -> None:
    transformer = Transformer(SchemaStore(STORE), schemaless="reject")
    routed = transformer.process(EVENT, b"k", OTHER.headers(), "raw", 0, 1)
    assert not routed.dead
    assert orjson.loads(routed.payload or b"")["schema_version"] == 1


def test_a_newer_version_replaces_the_store_entry() -> None:
    store = SchemaStore(STORE)
    transformer = Transformer(store)
    store.put("shop", "review", {"type": "object", "required": ["stars"]}, version=2)
    assert store.version("shop", "review") == 2
    routed = transformer.process(EVENT, b"k", OTHER.headers(), "raw", 0, 1)
    assert routed.dead
    assert decode_headers(routed.headers)["qanat.error.stage"] == "validate"


def test_settings_reject_only_accept_or_reject() -> None:
    assert TransformSettings(schemaless="reject").schemaless == "reject"
    with pytest.raises(ValidationError):
        TransformSettings(schemaless="drop")
