"""Invalid UTF-8 and numbers beyond a float, on every ingest route against the real
broker: refused with a 400 saying where (a stream: the line, with the others kept), and
nothing of a refused request reaches Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.settings import HttpSourceSettings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration
GOOD = b'{"name": "ok", "source_id": "g1"}'
BAD_UTF8 = b'{"name": "caf\xe9", "source_id": "b1"}'
HUGE = b'{"name": "n", "source_id": "b2", "price": {"eur": -1e400}}'
BATCH, ONE = "/api/v1/ingest/shop/product/batch", "/api/v1/ingest/shop/product"
HOOK = "/api/v1/webhooks/ingest/shop/product"
JSON = {"content-type": "application/json"}

ITEM = "/api/v1/ingest"
ITEM_HEAD = b'{"entity": "shop", "type": "p", '
UTF8, RANGE = "invalid_utf8", "number_out_of_range"
CASES = [
    (BATCH, b'{"records": [' + GOOD + b", " + BAD_UTF8 + b"]}", UTF8, "body.records.1.name"),
    (BATCH, b'{"items": [' + GOOD + b", " + HUGE + b"]}", RANGE, "body.items.1.price.eur"),
    (ONE, BAD_UTF8, UTF8, "body.name"),
    (ONE, HUGE, RANGE, "body.price.eur"),
    (ITEM, ITEM_HEAD + b'"t": "\xff"}', UTF8, "body.t"),
    (ITEM, ITEM_HEAD + b'"n": 1e400}', RANGE, "body.n"),
    (HOOK, BAD_UTF8, UTF8, "body.name"),
    (HOOK, b"[" + GOOD + b", " + HUGE + b"]", RANGE, "body.1.price.eur"),
]


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", webhook_allow_unsigned=True)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_route_refuses_undecodable_values_and_produces_nothing(
    client: TestClient, kafka: KafkaSettings
) -> None:
    answers = []
    for path, body, _code, location in CASES:
        response = client.post(path, content=body, headers=JSON)
        error = response.json()["error"]
        answers.append((path, response.status_code, error["code"], error["location"]))
        assert error["message"] and error["details"][0]["path"] == location
    assert answers == [(path, 400, code, location) for path, body, code, location in CASES]
    with client.websocket_connect("/api/v1/ws/ingest/shop/product") as socket:
        socket.send_bytes(b"[" + GOOD + b", " + BAD_UTF8 + b"]")
        assert socket.receive_json()["error"]["location"] == "body.1.name"
        socket.send_text(HUGE.decode())
        assert socket.receive_json()["error"]["code"] == "number_out_of_range"
    assert consume(kafka, kafka.topics.raw, expected=0) == []
    assert consume(kafka, kafka.topics.ingestions, expected=0, settle=0) == []


def test_the_byte_offset_is_the_bad_bytes_place_in_the_body(client: TestClient) -> None:
    body = b'{"records": [' + GOOD + b", " + BAD_UTF8 + b"]}"
    error = client.post(BATCH, content=body, headers=JSON).json()["error"]
    assert error["details"][0]["byte_offset"] == body.index(b"\xe9")


def test_a_stream_rejects_the_bad_lines_and_keeps_the_others(
    client: TestClient, kafka: KafkaSettings
) -> None:
    lines = [GOOD, BAD_UTF8, HUGE, b'{"name": "big but fine", "n": 1e308, "s": "1e999"}']
    response = client.post(
        "/api/v1/ingest/shop/product/stream",
        content=b"\n".join(lines) + b"\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 202
    report = response.json()
    assert (report["accepted"], report["rejected"]) == (2, 2)
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (2, "invalid_utf8"),
        (3, "number_out_of_range"),
    ]
    assert "field name" in report["errors"][0]["message"]
    assert "price.eur" in report["errors"][1]["message"]
    landed = consume(kafka, kafka.topics.raw, expected=2)
    assert sorted(m.value or b"" for m in landed) == sorted([lines[0], lines[3]])
    assert all(orjson.loads(m.value or b"") for m in landed)
