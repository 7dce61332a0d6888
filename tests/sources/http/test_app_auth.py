"""API keys on every ingest route, against the real broker: 401 without a live key, 403
out of scope or vertical, 202 with a good one; refused requests publish nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key
from sources.http.settings import HttpSourceSettings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Route:
    path: str
    body: bytes
    content_type: str = "application/json"


ROUTES = {
    "batch": Route("/api/v1/ingest/shop/product/batch", b'{"records": [{"name": "a"}]}'),
    "single": Route("/api/v1/ingest/shop/product", b'{"name": "a"}'),
    "item": Route("/api/v1/ingest", b'{"title": "a", "entity": "shop", "type": "product"}'),
    "stream": Route(
        "/api/v1/ingest/shop/product/stream", b'{"name": "a"}\n', "application/x-ndjson"
    ),
}


@dataclass
class Keys:
    shop_writer: str
    all_writer: str
    shop_reader: str
    news_writer: str
    revoked: str


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    return SQLiteKeyStore(tmp_path / "keys.db")


@pytest.fixture
def keys(store: SQLiteKeyStore) -> Keys:
    revoked, revoked_plaintext = create_key(store, "old", ["write"], ["shop"])
    store.revoke(revoked.id)
    return Keys(
        shop_writer=create_key(store, "shop", ["write"], ["shop"])[1],
        all_writer=create_key(store, "all", ["write", "read"], None)[1],
        shop_reader=create_key(store, "reader", ["read"], ["shop"])[1],
        news_writer=create_key(store, "news", ["write"], ["news"])[1],
        revoked=revoked_plaintext,
    )


@pytest.fixture
def client(kafka: KafkaSettings, store: SQLiteKeyStore) -> Iterator[TestClient]:
    app = create_app(kafka, HttpSourceSettings(), keys=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, route: Route, authorization: str | None) -> httpx.Response:
    headers = {"content-type": route.content_type}
    if authorization is not None:
        headers["authorization"] = authorization
    return client.post(route.path, content=route.body, headers=headers)


@pytest.mark.parametrize("name", ROUTES)
def test_every_ingest_route_refuses_a_missing_unknown_or_revoked_key(
    client: TestClient, keys: Keys, kafka: KafkaSettings, name: str
) -> None:
    route = ROUTES[name]
    unknown = keys.shop_writer[:-4] + ("AAAA" if not keys.shop_writer.endswith("AAAA") else "BBBB")
    cases = {
        None: "missing_api_key",
        "Basic dXNlcjpwdw==": "invalid_authorization",
        "Bearer": "invalid_authorization",
        "Bearer qk_nope": "invalid_api_key",
        f"Bearer {unknown}": "invalid_api_key",
        f"Bearer {keys.revoked}": "invalid_api_key",
    }
    for authorization, code in cases.items():
        response = post(client, route, authorization)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == code
        assert error["location"] == "header.authorization"
        assert keys.revoked not in response.text
    assert consume(kafka, kafka.topics.raw, expected=0) == []


@pytest.mark.parametrize("name", ROUTES)
def test_every_ingest_route_refuses_a_key_out_of_scope_or_vertical(
    client: TestClient, keys: Keys, kafka: KafkaSettings, name: str
) -> None:
    route = ROUTES[name]
    for key, reason in ((keys.shop_reader, "write scope"), (keys.news_writer, "'shop'")):
        response = post(client, route, f"Bearer {key}")
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert reason in error["message"]
    assert consume(kafka, kafka.topics.raw, expected=0) == []


@pytest.mark.parametrize("name", ROUTES)
def test_every_ingest_route_accepts_a_key_for_its_vertical_or_all(
    client: TestClient, keys: Keys, kafka: KafkaSettings, name: str
) -> None:
    route = ROUTES[name]
    for key in (keys.shop_writer, keys.all_writer):
        response = post(client, route, f"bearer {key}")  # the scheme is case-insensitive
        assert response.status_code == 202, response.text
    landed = consume(kafka, kafka.topics.raw, expected=2)
    assert len(landed) == 2
    assert {m.headers["qanat.vertical"] for m in landed} == {"shop"}


def test_a_key_for_vertical_a_cannot_write_vertical_b_by_the_item_route(
    client: TestClient, keys: Keys
) -> None:
    body = b'{"title": "a", "entity": "news", "type": "article"}'
    headers = {"content-type": "application/json", "authorization": f"Bearer {keys.shop_writer}"}
    response = client.post("/api/v1/ingest", content=body, headers=headers)
    assert response.status_code == 403
    headers["authorization"] = f"Bearer {keys.news_writer}"
    assert client.post("/api/v1/ingest", content=body, headers=headers).status_code == 202


def test_a_key_revoked_while_the_service_runs_is_refused_at_once(
    client: TestClient, store: SQLiteKeyStore
) -> None:
    key, plaintext = create_key(store, "soon revoked", ["write"], ["shop"])
    route = ROUTES["single"]
    assert post(client, route, f"Bearer {plaintext}").status_code == 202
    store.revoke(key.id)
    assert post(client, route, f"Bearer {plaintext}").status_code == 401


def test_health_needs_no_key_and_the_openapi_document_an_admin_one(
    client: TestClient, store: SQLiteKeyStore, keys: Keys
) -> None:
    """The docs and /metrics sit behind the admin scope (issue 16: on the ingest port)."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 401
    writer = {"Authorization": f"Bearer {keys.all_writer}"}
    assert client.get("/openapi.json", headers=writer).status_code == 403
    admin = create_key(store, "admin", ["admin"], None)[1]
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {admin}"}).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
