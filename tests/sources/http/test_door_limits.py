"""The door's other limits against the real app and broker: a record whose Kafka message
would be over the raw topic's max.message.bytes (read from the broker once, at start-up,
unless a setting says) is a 413 record_too_large naming it, and a vertical or type with a
trailing newline (``%0A``) is a 400 on every ingest route, never a 202. Nothing of a
refused request reaches Kafka."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from sources.http import events as http_events
from sources.http.app import create_app
from sources.http.settings import HttpSourceSettings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
TOPIC_LIMIT = 20_000


def record(size: int, source_id: str) -> bytes:
    """A record of about ``size`` bytes."""
    return orjson.dumps({"name": "n", "source_id": source_id, "blob": "x" * size})


def set_max_message_bytes(kafka: KafkaSettings, topic: str, value: int) -> None:
    entry = ConfigEntry(
        "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient(kafka.client())  # kept until the result: its handle must live
    admin.incremental_alter_configs([resource])[resource].result(30)


@pytest.fixture
def small_topic(kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app on a raw topic that takes messages of at most TOPIC_LIMIT bytes; it asks
    the broker once."""
    set_max_message_bytes(kafka, kafka.topics.raw, TOPIC_LIMIT)
    asked: list[str] = []
    real = http_events.topic_max_message_bytes

    def spy(config: dict[str, Any], topic: str, timeout: float = 10.0) -> int:
        asked.append(topic)
        return real(config, topic, timeout)

    monkeypatch.setattr(http_events, "topic_max_message_bytes", spy)
    settings = HttpSourceSettings(auth="none", webhook_allow_unsigned=True)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as client:
        assert client.app.state.max_record_bytes == TOPIC_LIMIT  # type: ignore[attr-defined]
        yield client
    assert asked == [kafka.topics.raw]


def too_large(response: Any, location: str, index: int) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["location"]) == ("record_too_large", location)
    assert f"record {index} " in error["message"] and str(TOPIC_LIMIT) in error["message"]


def test_a_record_over_the_raw_topics_limit_is_a_413_naming_it(
    small_topic: TestClient, kafka: KafkaSettings
) -> None:
    fits, big = record(TOPIC_LIMIT - 2_000, "fits"), record(TOPIC_LIMIT, "big")
    client = small_topic
    batch = b'{"records": [' + fits + b", " + big + b"]}"
    too_large(
        client.post("/api/v1/ingest/shop/p/batch", content=batch, headers=JSON), "body.records.1", 1
    )
    too_large(client.post("/api/v1/ingest/shop/p", content=big, headers=JSON), "body", 0)
    hook = b"[" + fits + b", " + fits + b", " + big + b"]"
    too_large(
        client.post("/api/v1/webhooks/ingest/shop/p", content=hook, headers=JSON), "body.2", 2
    )
    with client.websocket_connect("/api/v1/ws/ingest/shop/p") as socket:
        socket.send_bytes(b"[" + fits + b", " + big + b"]")
        error = socket.receive_json()["error"]
    assert (error["code"], error["location"]) == ("record_too_large", "body.1")
    assert consume(kafka, kafka.topics.raw, expected=0, settle=0.5) == []
    accepted = client.post(
        "/api/v1/ingest/shop/p/batch", content=b'{"records": [' + fits + b"]}", headers=JSON
    )
    assert accepted.status_code == 202, accepted.text
    assert [m.value for m in consume(kafka, kafka.topics.raw, expected=1)] == [fits]


def test_the_setting_overrides_the_broker(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_args: Any, **_kw: Any) -> int:
        raise AssertionError("the broker was asked despite the setting")

    monkeypatch.setattr(http_events, "topic_max_message_bytes", never)
    settings = HttpSourceSettings(auth="none", max_record_bytes=5_000)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as client:
        response = client.post("/api/v1/ingest/shop/p", content=record(6_000, "s"), headers=JSON)
        assert response.json()["error"]["code"] == "record_too_large"
        assert "5000 bytes" in response.json()["error"]["message"]
        assert (
            client.post(
                "/api/v1/ingest/shop/p", content=record(3_000, "t"), headers=JSON
            ).status_code
            == 202
        )


def test_unset_the_limit_is_the_topics_within_the_producers(kafka: KafkaSettings) -> None:
    assert http_events.record_limit(kafka, None) == 1_000_000  # topic 1,048,588; producer 1e6
    producer = kafka.model_copy(update={"client_config": {"message.max.bytes": "50000"}})
    assert http_events.record_limit(producer, None) == 50_000
    assert http_events.record_limit(kafka, 4096) == 4096


NEWLINE = [
    (
        "/api/v1/ingest/shop%0A/product/batch",
        b'{"records": [{"name": "a"}]}',
        JSON,
        "path.vertical",
    ),
    ("/api/v1/ingest/shop/product%0A/batch", b'{"records": [{"name": "a"}]}', JSON, "path.type"),
    ("/api/v1/ingest/probe/item%0A/batch", b'{"items": [{"title": "a"}]}', JSON, "path.type"),
    ("/api/v1/ingest/shop%0A/product", b'{"name": "a"}', JSON, "path.vertical"),
    ("/api/v1/ingest/shop/product%0A", b'{"name": "a"}', JSON, "path.type"),
    ("/api/v1/ingest/shop%0A/product/stream", b'{"name": "a"}\n', NDJSON, "path.vertical"),
    ("/api/v1/ingest/shop/product%0A/stream", b'{"name": "a"}\n', NDJSON, "path.type"),
    ("/api/v1/webhooks/ingest/shop%0A/product", b'{"name": "a"}', JSON, "path.vertical"),
    ("/api/v1/webhooks/ingest/shop/product%0A", b'{"name": "a"}', JSON, "path.type"),
    ("/api/v1/ingest", b'{"entity": "shop\\n", "type": "p", "title": "a"}', JSON, "body.entity"),
    ("/api/v1/ingest", b'{"entity": "shop", "type": "p\\n", "title": "a"}', JSON, "body.type"),
]


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", webhook_allow_unsigned=True)
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize(("path", "body", "headers", "location"), NEWLINE)
def test_a_trailing_newline_in_a_name_is_refused_on_every_route(
    client: TestClient, path: str, body: bytes, headers: dict[str, str], location: str
) -> None:
    response = client.post(path, content=body, headers=headers)
    status = 422 if location.startswith("body.") else 400  # a name in the body: its shape
    assert response.status_code == status, response.text
    error = response.json()["error"]
    kind = "vertical" if location.endswith(("vertical", "entity")) else "type"
    assert (error["code"], error["location"]) == (f"invalid_{kind}", location)
    assert "must match" in error["message"]


def test_a_trailing_newline_on_the_socket_is_an_error_and_nothing_lands(
    client: TestClient, kafka: KafkaSettings
) -> None:
    for path, where in [("shop%0A/product", "path.vertical"), ("shop/product%0A", "path.type")]:
        with client.websocket_connect(f"/api/v1/ws/ingest/{path}") as socket:
            socket.send_text('{"name": "a"}')
            error = socket.receive_json()["error"]
        assert (error["code"], error["location"]) == (f"invalid_{where[5:]}", where)
    for path, body, headers, _location in NEWLINE:
        client.post(path, content=body, headers=headers)
    assert consume(kafka, kafka.topics.raw, expected=0, settle=0.5) == []
