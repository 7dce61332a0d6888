"""What the decoders would let through, refused at the door of every route that takes
records, against the real app and broker: a key twice in one object (never last copy
wins), nesting deeper than MAX_NESTING_DEPTH, and more records than a request may carry
(counted before they are built). Each refusal is the JSON error body naming where, and
nothing of the request reaches Kafka."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from pipelines.core.records import MAX_NESTING_DEPTH
from sources.http import jsoncheck as http_json
from sources.http.app import create_app
from sources.http.body import parse_batch
from sources.http.errors import ApiError
from sources.http.settings import HttpSourceSettings
from sources.http.webhooks import parse_webhook_body
from tests.kafka_helpers import consume

BATCH, ONE, ITEM = (
    "/api/v1/ingest/shop/product/batch",
    "/api/v1/ingest/shop/product",
    "/api/v1/ingest",
)
HOOK, STREAM = "/api/v1/webhooks/ingest/shop/product", "/api/v1/ingest/shop/product/stream"
WS = "/api/v1/ws/ingest/shop/product"
JSON = {"content-type": "application/json"}
MB = 1024 * 1024


def nested(levels: int) -> bytes:
    """An array ``levels`` deep, inside a record: the record is ``levels + 1`` deep."""
    return b'{"name": "deep", "d": ' + b"[" * levels + b"]" * levels + b"}"


DEEP, DEEPEST_OK = nested(MAX_NESTING_DEPTH), nested(MAX_NESTING_DEPTH - 1)
DEEP_AT = ".d" + ".0" * (MAX_NESTING_DEPTH - 1)  # the array at depth 129 of the record
GOOD = b'{"name": "ok", "source_id": "g1"}'
WALL = b"[" * 100_000 + b"]" * 100_000  # beyond every decoder's own recursion limit


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", webhook_allow_unsigned=True, max_records=5)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as test_client:
        yield test_client


def refusal(response: object, status: int) -> tuple[str, str]:
    assert getattr(response, "status_code", None) == status, getattr(response, "text", "")
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert set(error) >= {"code", "message", "location", "details"} and error["message"]
    return error["code"], error["location"]


DUPLICATES = [
    (BATCH, b'{"records": [' + GOOD + b'], "records": [{"name": "x"}]}', "body.records"),
    (BATCH, b'{"records": [' + GOOD + b', {"name": "a", "name": "b"}]}', "body.records.1.name"),
    (
        BATCH,
        b'{"items": [{"title": "t", "v": {"x": 1, "y": [{"x": 1, "x": 2}]}}]}',
        "body.items.0.v.y.0.x",
    ),
    (BATCH, b'{"records": [{"name": "a", "n\\u0061me": "b"}]}', "body.records.0.name"),
    (BATCH, b'{"records": [{"a\\u003a": 1, "b": 1, "b": 2}]}', "body.records.0.b"),
    (ONE, b'{"name": "first", "name": "second", "source_id": "d1"}', "body.name"),
    (
        ITEM,
        b'{"entity": "shop", "type": "p", "title": "t", "tags": {"a": 1, "a": 1}}',
        "body.tags.a",
    ),
    (HOOK, b'{"name": "a", "name": "b"}', "body.name"),
    (
        HOOK,
        b"[" + GOOD + b', {"name": "a", "source_id": "s", "source_id": "t"}]',
        "body.1.source_id",
    ),
]


@pytest.mark.integration
def test_keys_that_only_look_alike_are_accepted(client: TestClient, kafka: KafkaSettings) -> None:
    records = [
        b'{"name": "a", "Name": "b", "name ": "c", "v": {"name": 1}, "w": [{"name": 2}]}',
        b'{"name": "a\\u003a", "a\\u003a": 1, "b:": 2, "t": "12:00:00"}',  # ":" escaped
    ]
    body = b'{"records": [' + b", ".join(records) + b"]}"
    response = client.post(BATCH, content=body, headers=JSON)
    assert response.status_code == 202, response.text
    assert sorted(m.value for m in consume(kafka, kafka.topics.raw, 2)) == sorted(records)


@pytest.mark.integration
def test_a_stream_rejects_the_line_and_a_socket_the_message(
    client: TestClient, kafka: KafkaSettings
) -> None:
    lines = [GOOD, b'{"name": "a", "v": {"k": 1, "k": 2}}', DEEP, DEEPEST_OK]
    response = client.post(
        STREAM, content=b"\n".join(lines), headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [(e["line"], e["code"]) for e in body["errors"]] == [
        (2, "duplicate_key"),
        (3, "too_deep"),
    ]
    assert "$.v.k" in body["errors"][0]["message"]
    assert "$" + DEEP_AT in body["errors"][1]["message"]
    with client.websocket_connect(WS) as socket:
        socket.send_text('[{"name": "a"}, {"name": "b", "name": "c"}]')
        twice = socket.receive_json()
        socket.send_bytes(b"[" + DEEP + b"]")
        deep = socket.receive_json()
        socket.send_text('{"name": "after"}')
        after = socket.receive_json()
    assert (twice["error"]["code"], twice["error"]["location"]) == ("duplicate_key", "body.1.name")
    assert (deep["error"]["code"], deep["error"]["location"]) == ("too_deep", "body.0" + DEEP_AT)
    assert after["type"] == "ack"
    assert len(consume(kafka, kafka.topics.raw, expected=3)) == 3


DEPTHS = [
    (BATCH, b'{"records": [' + GOOD + b", " + DEEP + b"]}", "body.records.1" + DEEP_AT),
    (BATCH, b'{"items": [' + WALL + b"]}", "body.items" + ".0" * (MAX_NESTING_DEPTH + 1)),
    (ONE, DEEP, "body" + DEEP_AT),
    (ITEM, DEEP[:-1] + b', "entity": "shop", "type": "p"}', "body" + DEEP_AT),
    (HOOK, DEEP, "body" + DEEP_AT),
    (HOOK, b"[" + GOOD + b", " + DEEP + b"]", "body.1" + DEEP_AT),
    (HOOK, WALL, "body" + ".0" * (MAX_NESTING_DEPTH + 1)),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "body", "code", "location"),
    [(*case[:2], "duplicate_key", case[2]) for case in DUPLICATES]
    + [(*case[:2], "too_deep", case[2]) for case in DEPTHS],
)
def test_a_key_twice_or_nesting_too_deep_is_a_400_naming_where_and_nothing_lands(
    client: TestClient, kafka: KafkaSettings, path: str, body: bytes, code: str, location: str
) -> None:
    response = client.post(path, content=body, headers=JSON)
    assert refusal(response, 400) == (code, location)
    assert response.json()["error"]["details"] == [{"path": location}]
    assert consume(kafka, kafka.topics.raw, expected=0, settle=0.5) == []


@pytest.mark.integration
def test_nesting_at_the_limit_is_accepted_and_brackets_in_strings_do_not_count(
    client: TestClient, kafka: KafkaSettings
) -> None:
    in_strings = orjson.dumps({"name": "[" * 500, "k": '\\"[{' * 300, "v": ["]]}}" * 200]})
    body = b'{"records": [' + DEEPEST_OK + b", " + in_strings + b"]}"
    assert client.post(BATCH, content=body, headers=JSON).status_code == 202
    assert client.post(ONE, content=DEEPEST_OK, headers=JSON).status_code == 202
    assert client.post(HOOK, content=b"[" + DEEPEST_OK + b"]", headers=JSON).status_code == 202
    assert len(consume(kafka, kafka.topics.raw, expected=4)) == 4


def tiny_records(size: int) -> bytes:
    """A batch body of ``size`` bytes, every record ``{}``."""
    head, tail = b'{"records": [', b"{}]}"
    return head + b"{}," * ((size - len(head) - len(tail)) // 3) + tail


@pytest.mark.integration
def test_ten_megabytes_of_tiny_records_are_a_413_from_the_real_app(client: TestClient) -> None:
    for path, body in [(BATCH, tiny_records(10 * MB)), (HOOK, tiny_records(10 * MB)[12:-1])]:
        response = client.post(path, content=body, headers=JSON)
        assert refusal(response, 413)[0] == "too_many_records"
        assert "at most 5 per request" in response.json()["error"]["message"]


def peak_bytes(parse: object, *args: object) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as refused:
            parse(*args)  # type: ignore[operator]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert refused.value.code == "too_many_records"
    return peak


def test_too_many_records_are_counted_without_building_them() -> None:
    body = tiny_records(10 * MB)
    http_json.prepare_split(1000)  # as create_app does at start-up
    assert peak_bytes(parse_batch, body, 1000) < len(body) // 50
    assert peak_bytes(parse_webhook_body, body[12:-1], 1000) < len(body) // 50
    # Past STRUCT_MAX_RECORDS, a list of every element is built before the count.
    assert peak_bytes(parse_batch, body, http_json.STRUCT_MAX_RECORDS + 1) > len(body)


def test_a_body_of_very_many_values_is_checked_without_keeping_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_json, "VALUE_BUDGET", 10)
    body = b'{"records": [{"name": "a", "source_id": "s1", "v": [1, 2, 3, {"x": 1}]}, 7]}'
    values, keys, _where = parse_batch(body, 10)
    assert values[1] == b"7"
    assert keys == [{"source_id": "s1", "idempotency_key": None}, None]
    with pytest.raises(ApiError) as twice:
        parse_batch(body.replace(b'"x": 1', b'"x": 1, "x": 2'), 10)
    assert (twice.value.code, twice.value.location) == ("duplicate_key", "body.records.0.v.3.x")
    with pytest.raises(ApiError) as bad:
        parse_batch(body.replace(b"7", b"-1e400"), 10)
    assert (bad.value.code, bad.value.location) == ("number_out_of_range", "body.records.1")


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"1", 0),
        (b'"[[["', 0),
        (b'[[], {"a": [{}]}]', 4),
        (b'{"a\\"[": ["\\\\", "]"]}', 2),
        (b'["\\\\\\"[[[", [[[]]]]', 4),
        (b"[" * 10 + b"]" * 10, 10),
        (b"[" * 1000 + b"]" * 1000, 1000),
    ],
)
def test_the_byte_scan_measures_depth_outside_strings(data: bytes, depth: int) -> None:
    assert http_json.nesting_depth(data) == depth
    assert (http_json.too_deep_path(data, depth) is None) and (
        depth == 0 or http_json.too_deep_path(data, depth - 1) is not None
    )
