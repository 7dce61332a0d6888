"""The OpenAPI document describes every route's answers: its success body and its errors,
each error with the JSON error body (and Retry-After on 429 and 503)."""

from __future__ import annotations

from typing import Any

from pipelines.control.app import control_router
from pipelines.core.config import KafkaSettings
from pipelines.transform.registry import SchemaRegistry
from sources.http.app import create_app
from sources.http.settings import HttpSourceSettings


def _spec() -> dict[str, Any]:
    kafka = KafkaSettings()
    app = create_app(kafka, HttpSourceSettings(auth="none"))
    app.include_router(control_router(kafka, SchemaRegistry(kafka)))
    spec: dict[str, Any] = app.openapi()
    return spec


def test_every_operation_documents_its_success_and_its_errors() -> None:
    spec = _spec()
    operations = {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert ("GET", "/api/v1/sse/records/{vertical}/{type}") in operations
    for (method, path), operation in operations.items():
        statuses = {int(status) for status in operation["responses"] if status != "4XX"}
        assert statuses & {200, 201, 202}, (method, path)
        if path != "/healthz":
            assert 400 in statuses, (method, path)
        assert "4XX" in operation["responses"] or path == "/healthz", (method, path)
        for status, response in operation["responses"].items():
            if status[0] != "4" and status[0] != "5":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema["required"] == ["error"], (method, path, status)
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"] is True


def test_ingest_routes_document_every_error_of_the_issue() -> None:
    paths = _spec()["paths"]
    batch = paths["/api/v1/ingest/{vertical}/{type}/batch"]["post"]["responses"]
    assert set(batch) == {"202", "400", "401", "403", "413", "415", "422", "429", "503", "4XX"}
    accepted = batch["202"]["content"]["application/json"]["schema"]
    assert accepted["required"] == ["ingestion_id", "record_count"]
    put = paths["/api/v1/schemas/{vertical}/{type}"]["put"]["responses"]
    assert {"200", "201", "401", "403"} <= set(put)
