"""The DLQ routes (`GET /api/v1/dlq`, replay jobs) on the HTTP service, real broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines.control.dlq import dlq_router
from pipelines.core.config import KafkaSettings
from pipelines.transform.registry import SchemaRegistry
from tests.kafka_helpers import consume
from tests.pipelines.core.test_deadletter import SCHEMA, price_as_text, seed_dead_letters

FIXED = {"type": "object", "properties": {"price": {"type": ["number", "string"]}}}


def _wait_job(client: TestClient, url: str, **headers: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url, headers=headers).json()
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {url} still running")


@pytest.fixture
def client(kafka: KafkaSettings) -> Any:
    app = FastAPI()
    app.include_router(dlq_router(kafka))
    with TestClient(app) as test_client:
        yield test_client


def test_list_pages_with_a_cursor_and_filters(kafka: KafkaSettings, client: TestClient) -> None:
    seed_dead_letters(kafka, [price_as_text(i) for i in range(5)] + [b"nope"])
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        answer = client.get("/api/v1/dlq", params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [(item["partition"], item["offset"]) for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 6 and seen == sorted(set(seen))
    item = client.get("/api/v1/dlq", params={"reason": "json"}).json()["items"]
    assert [(i["stage"], i["value"], i["value_encoding"]) for i in item] == [
        ("parse", "bm9wZQ==", "base64")
    ]
    params = [("header", "qanat.event_id=e1"), ("header", "qanat.source=http")]
    found = client.get("/api/v1/dlq", params=params).json()["items"]
    assert [i["headers"]["qanat.event_id"] for i in found] == ["e1"]
    assert client.get("/api/v1/dlq", params={"until": "1h"}).json()["items"] == []

    for query, location in (
        ({"limit": "0"}, "query.limit"),
        ({"cursor": "nope"}, "query.cursor"),
        ({"since": "yesterday"}, "query.since"),
        ({"from_offset": "-1"}, "query.from_offset"),
        ({"header": "no-equals"}, "query.header"),
    ):
        refused = client.get("/api/v1/dlq", params=query)
        assert refused.status_code == 400
        assert refused.json()["error"]["location"] == location


def test_replay_job_dry_run_then_replay(kafka: KafkaSettings, client: TestClient) -> None:
    seed_dead_letters(kafka, [price_as_text(i) for i in range(3)] + [b"nope"])
    registry = SchemaRegistry(kafka)
    registry.register("shop", "product", SCHEMA)
    for schema, passing in ((SCHEMA, 0), (FIXED, 3)):
        registry.register("shop", "product", schema)
        started = client.post("/api/v1/dlq/replay", json={"dry_run": True, "stage": "validate"})
        assert started.status_code == 202, started.text
        job = _wait_job(client, started.json()["status_url"])
        assert job["state"] == "done", job
        assert (job["summary"]["would_pass"], job["summary"]["would_fail"]) == (
            passing,
            3 - passing,
        )
        assert job["examined"] == job["total"] == 4
    registry.close()

    started = client.post("/api/v1/dlq/replay", json={"stage": "validate", "rate": 1000})
    job = _wait_job(client, started.json()["status_url"])
    assert (job["state"], job["summary"]["replayed"]) == ("done", 3), job
    assert len(consume(kafka, kafka.topics.raw, 3, timeout=20, settle=0.5)) == 3
    again = _wait_job(
        client, client.post("/api/v1/dlq/replay", json={"stage": "validate"}).json()["status_url"]
    )
    assert (again["summary"]["replayed"], again["summary"]["resumed"]) == (0, True)

    for body, location in (
        ({"rate": 0}, "body.rate"),
        ({"max_replays": -1}, "body.max_replays"),
        ({"colour": "red"}, "body.colour"),
        ({"headers": ["x"]}, "body.headers"),
        ({"replay_id": "no spaces"}, "body.replay_id"),
    ):
        refused = client.post("/api/v1/dlq/replay", json=body)
        assert refused.status_code == 400, body
        assert refused.json()["error"]["location"] == location
    bad_json = client.post("/api/v1/dlq/replay", content=b"{")
    assert bad_json.json()["error"]["code"] == "invalid_json"
    missing = client.get("/api/v1/dlq/replay/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


def test_a_second_job_of_a_running_replay_is_refused(
    kafka: KafkaSettings, client: TestClient
) -> None:
    seed_dead_letters(kafka, [b"x"] * 6)
    body = {"replay_id": "slow", "rate": 4}
    first = client.post("/api/v1/dlq/replay", json=body)
    assert first.status_code == 202
    second = client.post("/api/v1/dlq/replay", json=body)
    assert second.status_code == 409 and second.json()["error"]["code"] == "replay_running"
    assert _wait_job(client, first.json()["status_url"])["summary"]["replayed"] == 6


def test_routes_need_read_or_write_keys_per_vertical(kafka: KafkaSettings, tmp_path: Path) -> None:
    from sources.http.app import create_app
    from sources.http.auth import SQLiteKeyStore, create_key
    from sources.http.settings import HttpSourceSettings

    seed_dead_letters(kafka, [b"shop 1", b"shop 2"], vertical="shop", prefix="s")
    seed_dead_letters(kafka, [b"news 1"], vertical="news", prefix="n")
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    reader = create_key(keys, "reader", ["read"], None)[1]
    shop_reader = create_key(keys, "shop reader", ["read"], ["shop"])[1]
    writer = create_key(keys, "writer", ["write"], ["news"])[1]
    app = create_app(kafka, HttpSourceSettings(auth="keys"), keys=keys)
    authenticator = app.state.authenticator
    app.include_router(
        dlq_router(
            kafka,
            read_auth=authenticator.require("read"),
            write_auth=authenticator.require("write"),
        )
    )

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    with TestClient(app) as client:
        assert client.get("/api/v1/dlq").status_code == 401
        assert len(client.get("/api/v1/dlq", headers=bearer(reader)).json()["items"]) == 3
        mine = client.get("/api/v1/dlq", headers=bearer(shop_reader)).json()["items"]
        assert sorted(i["vertical"] for i in mine) == ["shop", "shop"]
        news = client.get("/api/v1/dlq", params={"vertical": "news"}, headers=bearer(shop_reader))
        assert news.status_code == 403 and news.json()["error"]["code"] == "forbidden"
        assert client.get("/api/v1/dlq", headers=bearer(writer)).status_code == 403

        assert client.post("/api/v1/dlq/replay", json={}, headers=bearer(reader)).status_code == 403
        started = client.post("/api/v1/dlq/replay", json={}, headers=bearer(writer))
        assert started.status_code == 202
        job = _wait_job(client, started.json()["status_url"], **bearer(reader))
        assert job["summary"]["replayed"] == 1  # the writer may only write news
        landed = consume(kafka, kafka.topics.raw, 1, timeout=20, settle=0.5)
        assert [message.value for message in landed] == [b"news 1"]
