"""The HTTP source against the real broker: 202 means durable, every 4xx says why."""

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
URL = "/api/v1/ingest/shop/product/batch"


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", max_body_bytes=20_000, max_records=5)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_batch_is_published_with_contract_keys_and_headers(
    client: TestClient, kafka: KafkaSettings
) -> None:
    records = [{"name": "Lamp", "source_id": "p1", "price": 3}, {"name": "no id"}, {"bad": 1}]
    response = client.post(URL, json={"records": records})
    assert response.status_code == 202
    body = response.json()
    assert body["record_count"] == 3
    landed = consume(kafka, kafka.topics.raw, expected=3)
    assert len(landed) == 3
    by_value = {orjson.loads(m.value or b"null").get("name"): m for m in landed}
    keyed = by_value["Lamp"]
    assert keyed.key == b"shop/product/p1"
    assert keyed.headers["qanat.vertical"] == "shop"
    assert keyed.headers["qanat.type"] == "product"
    assert keyed.headers["qanat.source"] == "http"
    assert keyed.headers["content-type"] == "application/json"
    assert {m.headers["qanat.ingestion_id"] for m in landed} == {body["ingestion_id"]}
    assert len({m.headers["qanat.event_id"] for m in landed}) == 3
    unkeyed = by_value["no id"]
    assert unkeyed.key == unkeyed.headers["qanat.event_id"].encode()


def test_items_batch_is_published_keyed_by_idempotency_key(
    client: TestClient, kafka: KafkaSettings
) -> None:
    items = [
        {"title": "Rain", "body": "b", "type": "article", "idempotency_key": "k1"},
        {"title": "Sun", "date": "2026-01-02", "source": "wire", "entity": "e"},
    ]
    response = client.post(URL, json={"items": items})
    assert response.status_code == 202
    body = response.json()
    assert body["record_count"] == 2
    landed = consume(kafka, kafka.topics.raw, expected=2)
    assert len(landed) == 2
    by_title = {orjson.loads(m.value or b"null")["title"]: m for m in landed}
    assert by_title["Rain"].key == b"shop/product/k1"
    assert orjson.loads(by_title["Rain"].value or b"null") == items[0]
    sun = by_title["Sun"]
    assert sun.key == sun.headers["qanat.event_id"].encode()
    for message in landed:
        assert message.headers["qanat.ingestion_id"] == body["ingestion_id"]
        assert message.headers["qanat.vertical"] == "shop"
        assert message.headers["qanat.type"] == "product"
        assert message.headers["qanat.source"] == "http"
        assert message.headers["content-type"] == "application/json"
        assert message.headers["qanat.received_at"].endswith("Z")


def test_empty_items_batch_is_accepted(client: TestClient) -> None:
    response = client.post(URL, json={"items": []})
    assert response.status_code == 202
    assert response.json()["record_count"] == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "location"),
    [
        (URL, b"{not json", 400, "invalid_json", "body"),
        # Shape errors are 422 (issue 3), with the path of what is wrong.
        (URL, b'{"records": {"a": 1}}', 422, "invalid_records", "body.records"),
        (URL, b'{"items": "x"}', 422, "invalid_items", "body.items"),
        (URL, b'{"rows": []}', 422, "invalid_body", "body"),
        (URL, b'{"records": [], "items": []}', 422, "invalid_body", "body"),
        (URL, b"[]", 422, "invalid_body", "body"),
        (URL, b'"records"', 422, "invalid_body", "body"),
        (
            "/api/v1/ingest/Shop/product/batch",
            b'{"records": []}',
            400,
            "invalid_vertical",
            "path.vertical",
        ),
        (
            "/api/v1/ingest/shop/a%3Bdrop/batch",
            b'{"records": []}',
            400,
            "invalid_type",
            "path.type",
        ),
        (URL, orjson.dumps({"records": [{}] * 6}), 413, "too_many_records", "body.records"),
        (URL, orjson.dumps({"items": [{}] * 6}), 413, "too_many_records", "body.items"),
        (URL, orjson.dumps({"records": [{"x": "y" * 30_000}]}), 413, "body_too_large", "body"),
    ],
)
def test_bad_requests_get_a_json_error_saying_what_and_where(
    client: TestClient, path: str, body: bytes, status: int, code: str, location: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["location"] == location
    assert error["message"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(URL, content=b"name=x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"]["location"] == "header.content-type"


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unreachable_kafka_is_a_503_never_a_202(kafka: KafkaSettings) -> None:
    from pipelines.devbroker import free_port
    from sources.publisher import KafkaPublisher

    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    publisher = KafkaPublisher(dead, delivery_timeout_s=2.0)
    app = create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)
    with TestClient(app) as test_client:
        response = test_client.post(URL, json={"records": [{"name": "x"}]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "kafka_unavailable"
    assert response.headers["retry-after"]
