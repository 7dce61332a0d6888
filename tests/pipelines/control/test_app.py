"""The control plane's schema routes, on an app with just the control router."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines.control.app import control_router
from pipelines.core.config import KafkaSettings
from pipelines.transform.registry import SchemaRegistry

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "required": ["price"]}
URL = "/api/v1/schemas/shop/product"


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    registry = SchemaRegistry(kafka)
    app = FastAPI()
    app.include_router(control_router(kafka, registry))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        registry.close()


def test_put_registers_then_is_idempotent_and_get_reads(client: TestClient) -> None:
    missing = client.get(URL)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "schema_not_found"

    created = client.put(URL, json=SCHEMA)
    assert created.status_code == 201, created.text
    assert created.json() == {"vertical": "shop", "type": "product", "version": 1}
    same = client.put(URL, json=SCHEMA)
    assert (same.status_code, same.json()["version"]) == (200, 1)
    newer = client.put(URL, json={**SCHEMA, "properties": {"price": {"type": "number"}}})
    assert (newer.status_code, newer.json()["version"]) == (201, 2)

    latest = client.get(URL)
    assert latest.status_code == 200
    body = latest.json()
    assert (body["vertical"], body["type"], body["version"]) == ("shop", "product", 2)
    assert body["schema"]["properties"] == {"price": {"type": "number"}}
    assert body["registered_at"].endswith("Z")
    first = client.get(f"{URL}/versions/1")
    assert (first.status_code, first.json()["schema"]) == (200, SCHEMA)
    absent = client.get(f"{URL}/versions/9")
    assert absent.status_code == 404
    assert absent.json()["error"]["code"] == "version_not_found"


def test_invalid_schema_is_a_400_with_every_error(client: TestClient) -> None:
    bad = {"type": "no-such", "required": "name", "properties": {"a": {"minimum": "x"}}}
    response = client.put(URL, json=bad)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["location"]) == ("invalid_schema", "body")
    assert error["message"]
    assert [d["path"] for d in error["details"]] == [
        "$.properties.a.minimum",
        "$.required",
        "$.type",
    ]
    assert all(set(d) == {"path", "message"} for d in error["details"])
    assert client.get(URL).status_code == 404


@pytest.mark.parametrize(
    ("method", "url", "body", "code", "location"),
    [
        ("PUT", "/api/v1/schemas/Shop/product", b"{}", "invalid_vertical", "path.vertical"),
        ("PUT", "/api/v1/schemas/shop/pro%20duct", b"{}", "invalid_type", "path.type"),
        ("GET", "/api/v1/schemas/9shop/product", None, "invalid_vertical", "path.vertical"),
        ("GET", f"{URL}/versions/x", None, "invalid_version", "path.version"),
        ("GET", f"{URL}/versions/0", None, "invalid_version", "path.version"),
        ("PUT", URL, b"{not json", "invalid_json", "body"),
    ],
)
def test_bad_requests_are_json_400s(
    client: TestClient, method: str, url: str, body: bytes | None, code: str, location: str
) -> None:
    response = client.request(
        method, url, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["location"]) == (code, location)
    assert set(error) == {"code", "message", "location", "details"}


def test_schema_routes_need_admin_to_register_and_read_to_read(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """With API keys: PUT needs the admin scope on the vertical, GET the read scope."""
    from sources.http.app import create_app
    from sources.http.auth import SQLiteKeyStore, create_key
    from sources.http.settings import HttpSourceSettings

    store = SQLiteKeyStore(tmp_path / "keys.db")
    keys = {
        name: create_key(store, name, scopes, verticals)[1]
        for name, scopes, verticals in (
            ("admin", ["admin"], ["shop"]),
            ("admin_news", ["admin", "read"], ["news"]),
            ("writer", ["write"], ["shop"]),
            ("reader", ["read"], ["shop"]),
        )
    }
    app = create_app(kafka, HttpSourceSettings(auth="keys"), keys=store)
    authenticator = app.state.authenticator
    registry = SchemaRegistry(kafka)
    app.include_router(
        control_router(
            kafka,
            registry,
            read_auth=authenticator.require("read"),
            admin_auth=authenticator.require("admin"),
        )
    )

    def bearer(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys.get(name, name)}"}

    try:
        with TestClient(app) as client:
            assert client.put(URL, json=SCHEMA).status_code == 401
            assert client.put(URL, json=SCHEMA, headers=bearer("qk_00_nope")).status_code == 401
            for refused in ("writer", "reader", "admin_news"):
                response = client.put(URL, json=SCHEMA, headers=bearer(refused))
                assert response.status_code == 403, refused
                assert response.json()["error"]["code"] == "forbidden"
            assert client.put(URL, json=SCHEMA, headers=bearer("admin")).status_code == 201
            for url in (URL, f"{URL}/versions/1"):
                assert client.get(url).status_code == 401
                for refused in ("writer", "admin", "admin_news"):
                    assert client.get(url, headers=bearer(refused)).status_code == 403
                assert client.get(url, headers=bearer("reader")).status_code == 200
    finally:
        registry.close()
