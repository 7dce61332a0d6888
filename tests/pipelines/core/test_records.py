"""The record contract: both shapes, folding, keys, headers, derived ids, event time."""

from __future__ import annotations

import pytest

from pipelines.core.errors import InvalidRecordError
from pipelines.core.records import (
    RawMeta,
    check_identifier,
    content_hash,
    format_time,
    normalize,
    parse_time,
    raw_event,
    time_text,
)
from pipelines.core.topics import decode_headers

META = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")


def test_entity_shape_folds_extra_fields_into_vertical_data() -> None:
    record = normalize(
        {"name": "Lamp", "source_id": "p1", "price": 9, "vertical_data": {"colour": "red"}},
        META,
        schema_version=3,
    )
    assert record == {
        "vertical": "shop",
        "type": "product",
        "source_id": "p1",
        "name": "Lamp",
        "vertical_data": {"price": 9, "colour": "red"},
        "source": "http",
        "ingestion_id": "ing-1",
        "event_id": "ev-1",
        "event_time": "2026-01-02T03:04:05.000000Z",
        "received_at": "2026-01-02T03:04:05.000000Z",
        "schema_version": 3,
    }


def test_explicit_vertical_data_wins_over_a_folded_field_of_the_same_name() -> None:
    record = normalize({"name": "x", "a": 1, "vertical_data": {"a": 2}}, META)
    assert record["vertical_data"] == {"a": 2}


def test_item_shape_maps_title_and_idempotency_key_and_folds_the_rest() -> None:
    item = {
        "title": "Post",
        "body": "hello",
        "type": "news",
        "date": "2026-03-01T10:00:00Z",
        "source": "rss",
        "entity": "blog",
        "idempotency_key": "k-9",
        "lang": "en",
    }
    record = normalize(item, META)
    assert record["name"] == "Post"
    assert record["source_id"] == "k-9"
    assert record["type"] == "product"  # the record's type comes from the path, not the item
    assert record["source"] == "http"  # the connector; the item's own source is data
    assert record["vertical_data"] == {
        "body": "hello",
        "type": "news",
        "date": "2026-03-01T10:00:00Z",
        "source": "rss",
        "entity": "blog",
        "lang": "en",
    }
    assert record["event_time"] == "2026-03-01T10:00:00.000000Z"


def test_item_source_id_wins_over_idempotency_key() -> None:
    assert (
        normalize({"title": "t", "source_id": "s", "idempotency_key": "k"}, META)["source_id"]
        == "s"
    )


def test_missing_source_id_is_a_stable_content_hash() -> None:
    first = normalize({"name": "x", "b": 1, "a": 2}, META)
    second = normalize({"a": 2, "name": "x", "b": 1}, META)
    assert first["source_id"] == second["source_id"] == content_hash({"name": "x", "a": 2, "b": 1})
    assert normalize({"name": "y"}, META)["source_id"] != first["source_id"]


def test_integer_source_id_becomes_a_string() -> None:
    assert normalize({"name": "x", "source_id": 42}, META)["source_id"] == "42"


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"price": 1}, "$.name"),
        ({"name": ""}, "$.name"),
        ({"name": 5}, "$.name"),
        ({"title": "  "}, "$.title"),
        ({"name": "x", "vertical_data": [1]}, "$.vertical_data"),
        ({"name": "x", "source_id": {"a": 1}}, "$.source_id"),
        ({"name": "x", "source_id": ""}, "$.source_id"),
        ({"name": "x", "date": "yesterday"}, "$.date"),
        ({"name": "x", "timestamp": True}, "$.timestamp"),
        ([1, 2], "$"),
        ("text", "$"),
    ],
)
def test_invalid_records_say_what_and_where(obj: object, path: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        normalize(obj, META)
    assert caught.value.stage == "normalize"
    assert caught.value.details[0]["path"] == path


def test_name_length_is_bounded() -> None:
    with pytest.raises(InvalidRecordError, match="too long"):
        normalize({"name": "x" * 11}, META, max_name_length=10)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T10:00:00+02:00", "2026-03-01T08:00:00.000000Z"),
        ("2026-03-01", "2026-03-01T00:00:00.000000Z"),
        (1767225600, "2026-01-01T00:00:00.000000Z"),
        (1767225600123, "2026-01-01T00:00:00.123000Z"),
    ],
)
def test_event_time_is_normalized_to_utc(value: object, expected: str) -> None:
    assert normalize({"name": "x", "event_time": value}, META)["event_time"] == expected


def test_raw_event_key_and_headers() -> None:
    keyed = raw_event(b'{"name":"x","source_id":"p1"}', {"name": "x", "source_id": "p1"}, META)
    assert keyed.key == "shop/product/p1"
    assert keyed.value == b'{"name":"x","source_id":"p1"}'
    assert decode_headers(keyed.headers) == {
        "qanat.vertical": "shop",
        "qanat.type": "product",
        "qanat.source": "http",
        "qanat.ingestion_id": "ing-1",
        "qanat.event_id": "ev-1",
        "qanat.received_at": "2026-01-02T03:04:05.000000Z",
        "content-type": "application/json",
    }
    unkeyed = raw_event(b"[1]", [1], META)
    assert unkeyed.key == "ev-1"
    assert raw_event(b"{}", {"title": "t", "idempotency_key": "k"}, META).key == "shop/product/k"


def test_meta_round_trips_through_headers() -> None:
    assert RawMeta.from_headers(decode_headers(META.headers())) == META


def test_missing_headers_are_a_parse_error_naming_each() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        RawMeta.from_headers({"qanat.vertical": "shop"})
    assert caught.value.stage == "parse"
    assert len(caught.value.details) == 5


@pytest.mark.parametrize("name", ["shop", "a", "b2b_sales", "x-y", "a" * 63])
def test_good_identifiers(name: str) -> None:
    assert check_identifier("vertical", name) == name


@pytest.mark.parametrize("name", ["", "Shop", "1shop", "a" * 64, "a b", "../etc", "a;drop", "é"])
def test_bad_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        check_identifier("vertical", name)


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.1Z",
        "2026-01-02T03:04:05.123456Z",
        "2026-01-02 03:04:05+00:00",
        "2026-01-02T03:04:05",
        "2026-01-02T03:04:05.000001",
        "2026-01-02T03:04:05+01:30",
        "2026-01-02T03:04:05-00:00",
        "2026-01-02",
        " 2026-01-02T03:04:05Z ",
        "2024-02-29T23:59:59.999999Z",
    ],
)
def test_fast_time_text_equals_parse_then_format(value: str) -> None:
    assert time_text(value) == format_time(parse_time(value))


@pytest.mark.parametrize("value", ["2026-02-30T00:00:00Z", "2026-01-02T24:00:00Z", "soon"])
def test_fast_time_text_still_checks_every_field(value: str) -> None:
    with pytest.raises(ValueError):
        time_text(value)
