"""Single-record ingest against the real broker: one record per request, 202 means durable."""

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
ONE = "/api/v1/ingest/shop/product"
ITEM = "/api/v1/ingest"
JSON = {"content-type": "application/json"}


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", max_body_bytes=20_000)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_one_record_lands_with_the_clients_bytes(client: TestClient, kafka: KafkaSettings) -> None:
    body = b'{"name": "Lamp", "source_id": "p1", "price": 3}'
    response = client.post(ONE, content=body, headers=JSON)
    assert response.status_code == 202
    answer = response.json()
    assert answer["record_count"] == 1
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.key == b"shop/product/p1"
    assert landed.value == body
    assert landed.headers["qanat.event_id"] == answer["event_id"]
    assert landed.headers["qanat.ingestion_id"] == answer["ingestion_id"]
    assert landed.headers["qanat.vertical"] == "shop"
    assert landed.headers["qanat.type"] == "product"
    assert landed.headers["qanat.source"] == "http"


def test_one_item_names_its_vertical_and_type(client: TestClient, kafka: KafkaSettings) -> None:
    item = {"title": "Rain", "entity": "news", "type": "article", "idempotency_key": "k1"}
    response = client.post(ITEM, json=item)
    assert response.status_code == 202
    answer = response.json()
    assert answer["record_count"] == 1
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.key == b"news/article/k1"
    assert orjson.loads(landed.value or b"null") == item
    assert landed.headers["qanat.vertical"] == "news"
    assert landed.headers["qanat.type"] == "article"
    assert landed.headers["qanat.event_id"] == answer["event_id"]


def test_one_record_without_key_is_keyed_by_its_event_id(
    client: TestClient, kafka: KafkaSettings
) -> None:
    response = client.post(ONE, json={"name": "no id"})
    assert response.status_code == 202
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.key == response.json()["event_id"].encode()


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "location"),
    [
        (ONE, b"{nope", 400, "invalid_json", "body"),
        (ONE, b"[]", 422, "invalid_body", "body"),
        (ONE, b"3", 422, "invalid_body", "body"),
        (ONE, orjson.dumps({"x": "y" * 30_000}), 413, "body_too_large", "body"),
        ("/api/v1/ingest/Shop/product", b"{}", 400, "invalid_vertical", "path.vertical"),
        (ITEM, b"{nope", 400, "invalid_json", "body"),
        (ITEM, b'[{"entity": "news"}]', 422, "invalid_body", "body"),
        (ITEM, b'{"title": "t", "type": "article"}', 422, "invalid_vertical", "body.entity"),
        (ITEM, b'{"entity": "News!", "type": "article"}', 422, "invalid_vertical", "body.entity"),
        (ITEM, b'{"entity": 5, "type": "article"}', 422, "invalid_vertical", "body.entity"),
        (ITEM, b'{"title": "t", "entity": "news"}', 422, "invalid_type", "body.type"),
        (ITEM, b'{"entity": "news", "type": "A B"}', 422, "invalid_type", "body.type"),
        (ITEM, orjson.dumps({"entity": "n", "x": "y" * 30_000}), 413, "body_too_large", "body"),
    ],
)
def test_bad_single_requests_say_what_and_where(
    client: TestClient, path: str, body: bytes, status: int, code: str, location: str
) -> None:
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["location"] == location
    assert error["message"]


@pytest.mark.parametrize("path", [ONE, ITEM])
def test_single_needs_json(client: TestClient, path: str) -> None:
    response = client.post(path, content=b"{}", headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 415
    assert response.json()["error"]["location"] == "header.content-type"
