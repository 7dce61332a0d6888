"""The WebSocket writer against the real broker: an ack per message with its event ids,
only once Kafka has them; bad messages get an error and the socket stays open; keys by
header, ?token= or subprotocol; refusals close with 1008."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key
from sources.http.settings import HttpSourceSettings
from sources.publisher import KafkaPublisher
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration
WS = "/api/v1/ws/ingest/shop/product"


@pytest.fixture
def client(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(auth="none", max_body_bytes=2_000, max_records=3)
    with TestClient(create_app(kafka, settings)) as test_client:
        yield test_client


def test_each_message_is_acked_with_its_event_ids_once_in_kafka(
    client: TestClient, kafka: KafkaSettings
) -> None:
    with client.websocket_connect(WS) as socket:
        socket.send_text(orjson.dumps({"name": "Lamp", "source_id": "p1"}).decode())
        first = socket.receive_json()
        socket.send_bytes(orjson.dumps([{"name": "A"}, {"name": "B", "source_id": "p2"}]))
        second = socket.receive_json()
    assert (first["type"], first["seq"], first["record_count"]) == ("ack", 1, 1)
    assert (second["type"], second["seq"], second["record_count"]) == ("ack", 2, 2)
    landed = consume(kafka, kafka.topics.raw, expected=3)
    by_event = {m.headers["qanat.event_id"]: m for m in landed}
    assert set(by_event) == {*first["event_ids"], *second["event_ids"]}
    lamp = by_event[first["event_ids"][0]]
    assert lamp.key == b"shop/product/p1"
    assert lamp.headers["qanat.ingestion_id"] == first["ingestion_id"]
    assert lamp.headers["qanat.source"] == "http"
    assert orjson.loads(lamp.value or b"") == {"name": "Lamp", "source_id": "p1"}
    assert by_event[second["event_ids"][1]].key == b"shop/product/p2"
    summaries = consume(kafka, kafka.topics.ingestions, expected=2)
    accepted = {orjson.loads(m.value or b"")["ingestion_id"]: m for m in summaries}
    assert set(accepted) == {first["ingestion_id"], second["ingestion_id"]}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ('"a string"', "invalid_body"),
        ("[1, 2]", "invalid_record"),
        (orjson.dumps([{"a": 1}] * 4).decode(), "too_many_records"),
        (orjson.dumps({"x": "y" * 3_000}).decode(), "message_too_large"),
    ],
)
def test_bad_messages_get_an_error_and_the_socket_stays_open(
    client: TestClient, message: str, code: str
) -> None:
    with client.websocket_connect(WS) as socket:
        socket.send_text(message)
        error = socket.receive_json()
        socket.send_text('{"name": "fine"}')
        after = socket.receive_json()
    assert (error["type"], error["seq"]) == ("error", 1)
    assert error["error"]["code"] == code
    assert set(error["error"]) >= {"code", "message", "location", "details"}
    assert (after["type"], after["seq"], after["record_count"]) == ("ack", 2, 1)


def test_bad_identifiers_are_an_error_message(client: TestClient) -> None:
    with client.websocket_connect("/api/v1/ws/ingest/Shop/product") as socket:
        socket.send_text('{"name": "x"}')
        error = socket.receive_json()
        socket.send_text('{"name": "y"}')
        again = socket.receive_json()
    assert error["error"]["code"] == again["error"]["code"] == "invalid_vertical"
    assert error["error"]["location"] == "path.vertical"


def test_unreachable_kafka_is_an_error_never_an_ack(kafka: KafkaSettings) -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    publisher = KafkaPublisher(dead, delivery_timeout_s=2.0)
    app = create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)
    with TestClient(app) as test_client, test_client.websocket_connect(WS) as socket:
        socket.send_text('{"name": "x"}')
        answer = socket.receive_json()
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "kafka_unavailable"
    assert answer["retry_after"] >= 1


@pytest.fixture
def keyed(kafka: KafkaSettings, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    keys = {
        "writer": create_key(store, "w", ["write"], ["shop"])[1],
        "reader": create_key(store, "r", ["read"], ["shop"])[1],
        "elsewhere": create_key(store, "n", ["write"], ["news"])[1],
    }
    with TestClient(create_app(kafka, HttpSourceSettings(auth="keys"), keys=store)) as test_client:
        yield test_client, keys


def _ack(client: TestClient, url: str, **kwargs: object) -> dict[str, object]:
    with client.websocket_connect(url, **kwargs) as socket:  # type: ignore[arg-type]
        socket.send_text('{"name": "x"}')
        answer: dict[str, object] = socket.receive_json()
        return answer


def test_a_write_key_by_header_token_or_subprotocol(
    keyed: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = keyed
    key = keys["writer"]
    assert _ack(client, WS, headers={"Authorization": f"Bearer {key}"})["type"] == "ack"
    assert _ack(client, f"{WS}?token={key}")["type"] == "ack"
    with client.websocket_connect(WS, subprotocols=["qanat.v1", f"bearer.{key}"]) as socket:
        assert socket.accepted_subprotocol == "qanat.v1"
        socket.send_text('{"name": "x"}')
        assert socket.receive_json()["type"] == "ack"


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (None, "missing_api_key"),
        ("qk_00_nope", "invalid_api_key"),
        ("reader", "forbidden"),
        ("elsewhere", "forbidden"),
    ],
)
def test_refused_keys_close_with_policy_violation(
    keyed: tuple[TestClient, dict[str, str]], who: str | None, reason: str
) -> None:
    client, keys = keyed
    headers = {} if who is None else {"Authorization": f"Bearer {keys.get(who, who)}"}
    with (
        client.websocket_connect(WS, headers=headers) as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        socket.receive_text()
    assert closed.value.code == 1008
    assert closed.value.reason.startswith(reason)
