"""Scopes on every route of ``qanat source http`` (issue 9): the key is checked before
anything else. Every HTTP route and WebSocket of the served app (found from its routes,
so a new one is covered) gets bad requests - garbage path, query and body - with no key,
an unknown key, keys without the scope the route needs and a key for another vertical:
401 for the first two, 403 for the others, never the 400/404/415/422 the garbage would
otherwise earn. A key with every scope gets that 4xx (the garbage is garbage). Webhooks
(signed, no key) answer 401 to an unsigned or badly signed request, whatever its body.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipelines.core.config import KafkaSettings, load
from tests.reliability.http_app import (
    VERTICAL,
    WEBHOOK_SECRET,
    capture_app,
    flatten,
    make_keys,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
SCOPES = ("read", "write", "admin")
GARBAGE_QUERY = {
    "vertical": VERTICAL,
    "limit": "lots",
    "cursor": "!!",
    "from": "nowhere",
    "updated_since": "never",
    "from_offset": "x",
    "partition": "y",
}
# Well-formed JSON of the wrong shape, naming the vertical (the routes whose vertical is
# in the body can check it): "type": 7 is no JSON Schema, no type, no record list.
SHAPE_GARBAGE = orjson.dumps(
    {"vertical": VERTICAL, "entity": VERTICAL, "type": 7, "records": 5, "rate": "fast", "x": 1}
)


@dataclass(frozen=True)
class Variant:
    """One bad request: path parameter values, body and content type."""

    name: str
    params: dict[str, str]
    body: bytes
    content_type: str
    vertical_known: bool  # the request names its vertical wherever the route reads it


def variants(ingestion_id: str, job_id: str) -> list[Variant]:
    known = {"type": "thing", "id": ingestion_id, "job_id": job_id, "version": "1"}
    garbage = {"type": "Not%20A%20Type!", "id": "%00", "job_id": "nope", "version": "-1"}
    return [
        Variant("shape", known, SHAPE_GARBAGE, "application/json", True),
        Variant("not JSON", garbage, b"\xff{not json,,", "text/plain", False),
        Variant(
            "bad values",
            known | {"version": "x"},
            b'{"entity": "sec", "type": "t", "records": [{"name": "caf\xe9", "n": 1e400}]}',
            "application/json",
            False,
        ),
    ]


def needed_scope(method: str, path: str) -> str:
    """The scope a route needs: reads need ``read``, schema registration ``admin``, every
    other write ``write``."""
    if method == "GET" or path.startswith("/api/v1/ws/records/"):
        return "read"
    return "admin" if path.startswith("/api/v1/schemas/") else "write"


def concrete(path: str, params: dict[str, str]) -> str:
    for name, value in ({"vertical": VERTICAL, "source_id": "x"} | params).items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"a new path parameter: give it a value here ({path})"
    return path


@pytest.fixture
def served(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, FastAPI, dict[str, str]]]:
    app = capture_app(kafka, tmp_path / "data", monkeypatch)
    keys = make_keys(tmp_path / "data")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app, keys


def _known_ingestion() -> str:
    """An ingestion of the vertical, as the errors sink stores its summary."""
    from sinks.sqlite.ingestions import SQLiteIngestionsSink
    from sinks.sqlite.sink import SQLiteSinkSettings

    sink = SQLiteIngestionsSink(load(SQLiteSinkSettings))
    sink.setup()
    summary = {
        "ingestion_id": "ing-sec-1",
        "vertical": VERTICAL,
        "type": "thing",
        "source": "http",
        "accepted": 1,
        "received_at": "2026-01-01T00:00:00.000000Z",
    }
    sink.add(summary, "ing-sec-1", 0, [], "qanat.ingestions", 0, 0)
    sink.flush()
    sink.close()
    return "ing-sec-1"


def _known_job(client: TestClient, key: str) -> str:
    response = client.post(
        "/api/v1/dlq/replay",
        json={"vertical": VERTICAL, "dry_run": True},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _expected(name: str, needed: str, path: str, variant: Variant) -> int | None:
    """The status key ``name`` must get; 0: past the key (not 401/403, not 5xx); None:
    nothing asserted (a key that has the scope and the vertical)."""
    if name in ("none", "unknown"):
        return 401
    if name in SCOPES:
        return None if name == needed else 403
    if name == "other-vertical":
        return 403 if variant.vertical_known or "{vertical}" in path else None
    return 0


def _check(where: str, expected: int, response: Any, garbage: bool) -> str | None:
    """What is wrong with ``response`` (None: nothing); ``garbage``: the request is
    refused whatever the key, so past the key it must be a 4xx."""
    status, text = response.status_code, response.text[:200]
    if expected == 0:
        past_key = status not in (401, 403) and status < 500
        if not past_key or (garbage and not 400 <= status < 500):
            return f"{where}: {status} {text}"
    elif status != expected:
        return f"{where}: {status}, expected {expected}: {text}"
    elif expected == 403 and response.json()["error"]["code"] != "forbidden":
        return f"{where}: {text}"
    return None


def test_every_route_checks_the_key_before_the_request(
    served: tuple[TestClient, FastAPI, dict[str, str]],
) -> None:
    client, app, keys = served
    keys = {"none": "", "unknown": "qk_0123456789abcdef_nope", **keys}
    routes = [r for r in flatten(app.routes) if getattr(r, "path", "").startswith("/api/v1/")]
    http = [r for r in routes if isinstance(r, APIRoute) and "/webhooks/" not in r.path]
    assert len(http) >= 12, [r.path for r in http]
    all_variants = variants(_known_ingestion(), _known_job(client, keys["all"]))
    problems: list[str] = []
    for route in http:
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            needed = needed_scope(method, route.path)
            for variant in all_variants:
                for name, key in keys.items():
                    expected = _expected(name, needed, route.path, variant)
                    if expected is None:
                        continue
                    headers = {"authorization": f"Bearer {key}"}
                    response = client.request(
                        method,
                        concrete(route.path, variant.params),
                        params=GARBAGE_QUERY,
                        content=variant.body,
                        headers=headers | {"content-type": variant.content_type},
                    )
                    where = f"{method} {route.path} ({variant.name}) with {name}"
                    garbage = variant.name == "not JSON"
                    problem = _check(where, expected, response, garbage)
                    if problem is not None:
                        problems.append(problem)
    assert not problems, "\n".join(problems)


def _socket_refusal(client: TestClient, path: str, key: str) -> str:
    """The close reason of a WebSocket that sent its key (if any) in the Authorization
    header."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        with client.websocket_connect(path, headers=headers) as ws:
            ws.send_text('{"name": "x"}')
            return f"not closed: {ws.receive_json()}"
    except WebSocketDisconnect as exc:
        return f"{exc.code} {exc.reason}"


def test_every_websocket_checks_the_key_before_the_request(
    served: tuple[TestClient, FastAPI, dict[str, str]],
) -> None:
    client, app, keys = served
    sockets = [r for r in flatten(app.routes) if isinstance(r, APIWebSocketRoute)]
    assert len(sockets) >= 2, [r.path for r in sockets]
    expected_codes = {"none": "missing_api_key", "unknown": "invalid_api_key"}
    problems = []
    for route in sockets:
        needed = needed_scope("WS", route.path)
        path = concrete(route.path, {"type": "Not%20A%20Type!"}) + "?from=nowhere"
        for name, key in {"none": "", "unknown": "qk_0123456789abcdef_nope", **keys}.items():
            if name == needed or name == "all":
                continue
            reason = _socket_refusal(client, path, key)
            code = expected_codes.get(name, "forbidden")
            if not reason.startswith(f"1008 {code}:"):
                problems.append(f"WS {route.path} with {name}: {reason}, expected 1008 {code}")
    assert not problems, "\n".join(problems)


def test_webhooks_refuse_unsigned_or_badly_signed_requests_before_the_body(
    served: tuple[TestClient, FastAPI, dict[str, str]],
) -> None:
    client, app, _keys = served
    hooks = [r for r in flatten(app.routes) if "/webhooks/" in getattr(r, "path", "")]
    assert hooks
    problems = []
    for route in hooks:
        for variant in variants("x", "x"):
            path = concrete(route.path, variant.params)
            wrong = hmac.new(b"not-" + WEBHOOK_SECRET.encode(), variant.body, "sha256")
            for signature in (None, "sha256=" + wrong.hexdigest(), "md5=abc"):
                headers = {"content-type": variant.content_type}
                if signature is not None:
                    headers["x-webhook-signature"] = signature
                response = client.post(path, content=variant.body, headers=headers)
                if response.status_code != 401:
                    problems.append(f"{route.path} ({variant.name}, {signature}): {response.text}")
    assert not problems, "\n".join(problems)
