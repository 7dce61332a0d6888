"""Live read against the real broker, through a real uvicorn server: records produced to
the records topic after a client subscribed arrive over WebSocket and server-sent events,
only those of its vertical and type; ?from=earliest replays; keys need the read scope."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from pipelines.control.app import control_router
from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key
from sources.http.settings import HttpSourceSettings
from tests.sources.http_server import serve

pytestmark = pytest.mark.integration
TIMEOUT = 20.0


@dataclass(frozen=True)
class Live:
    url: str
    keys: dict[str, str]

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v1/ws/records/shop/product"

    @property
    def sse(self) -> str:
        return self.url + "/api/v1/sse/records/shop/product"


@pytest.fixture
def live(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Live]:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    keys = {
        "reader": create_key(store, "r", ["read"], ["shop"])[1],
        "writer": create_key(store, "w", ["write"], ["shop"])[1],
    }
    app = create_app(kafka, HttpSourceSettings(auth="keys"), keys=store)
    authenticator = app.state.authenticator
    app.include_router(
        control_router(
            kafka,
            read_auth=authenticator.require("read"),
            live_auth=authenticator.connection_key,
            live_heartbeat_s=0.3,
        )
    )
    with serve(app) as url:
        yield Live(url, keys)


def produce(kafka: KafkaSettings, records: dict[str, dict[str, object]]) -> None:
    """Write normalized records to the records topic, keyed as the transform keys them."""
    producer = Producer(kafka.client())
    for key, record in records.items():
        producer.produce(kafka.topics.records, orjson.dumps(record), key.encode())
    assert producer.flush(30) == 0


def assert_feeds_closed() -> None:
    """Every connection's consumer thread ends once its client is gone."""
    deadline = time.monotonic() + TIMEOUT
    while any(t.name == "qanat-live" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a live feed outlived its client"
        time.sleep(0.05)


def receive_records(socket: ClientConnection, count: int) -> list[dict[str, object]]:
    received = []
    while len(received) < count:
        message = orjson.loads(socket.recv(timeout=TIMEOUT))
        assert message["type"] == "record"
        received.append(message)
    return received


def test_websocket_streams_new_records_of_its_vertical_and_type(
    live: Live, kafka: KafkaSettings
) -> None:
    produce(kafka, {"shop/product/old": {"source_id": "old"}})  # before: not sent
    headers = {"Authorization": f"Bearer {live.keys['reader']}"}
    with connect(live.ws, additional_headers=headers, open_timeout=TIMEOUT) as socket:
        hello = orjson.loads(socket.recv(timeout=TIMEOUT))
        assert (hello["type"], hello["from"]) == ("subscribed", "latest")
        produce(
            kafka,
            {
                "shop/order/o1": {"source_id": "o1"},
                "news/product/n1": {"source_id": "n1"},
                "shop/product/p1": {"source_id": "p1", "name": "Lamp"},
                "shop/product/p2": {"source_id": "p2"},
            },
        )
        received = receive_records(socket, 2)
        assert {m["record"]["source_id"] for m in received} == {"p1", "p2"}  # type: ignore[index]
        assert all(isinstance(m["offset"], int) for m in received)
        with pytest.raises(TimeoutError):  # nothing else: old, o1, n1 are filtered out
            socket.recv(timeout=1.0)
    assert_feeds_closed()


def test_websocket_from_earliest_replays_and_token_query_works(
    live: Live, kafka: KafkaSettings
) -> None:
    produce(kafka, {"shop/product/a": {"source_id": "a"}, "shop/order/b": {"source_id": "b"}})
    url = f"{live.ws}?from=earliest&token={live.keys['reader']}"
    with connect(url, open_timeout=TIMEOUT) as socket:
        assert orjson.loads(socket.recv(timeout=TIMEOUT))["from"] == "earliest"
        (only,) = receive_records(socket, 1)
        assert only["record"] == {"source_id": "a"}


@pytest.mark.parametrize("who", [None, "writer", "qk_00_nope"])
def test_websocket_without_a_read_key_closes_with_1008(live: Live, who: str | None) -> None:
    headers = {} if who is None else {"Authorization": f"Bearer {live.keys.get(who, who)}"}
    with (
        connect(live.ws, additional_headers=headers, open_timeout=TIMEOUT) as socket,
        pytest.raises(ConnectionClosed) as closed,
    ):
        socket.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason


def test_server_sent_events_stream_new_records_with_keepalives(
    live: Live, kafka: KafkaSettings
) -> None:
    params = {"token": live.keys["reader"]}
    with (
        httpx.Client(timeout=TIMEOUT) as client,
        client.stream("GET", live.sse, params=params) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == ": subscribed"
        produce(kafka, {"shop/order/x": {"source_id": "x"}, "shop/product/p9": {"n": 9}})
        events, comments, deadline = [], set(), time.monotonic() + TIMEOUT
        for line in lines:
            if line.startswith("data: "):
                events.append(orjson.loads(line[len("data: ") :]))
            elif line.startswith(":"):
                comments.add(line)
            if (events and ": keepalive" in comments) or time.monotonic() > deadline:
                break
    assert events == [{"n": 9}]
    assert ": keepalive" in comments
    assert_feeds_closed()


def test_server_sent_events_refusals_are_json_errors(live: Live) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(live.sse).status_code == 401
        forbidden = client.get(live.sse, params={"token": live.keys["writer"]})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        bad = client.get(live.sse, params={"token": live.keys["reader"], "from": "noon"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_from"
