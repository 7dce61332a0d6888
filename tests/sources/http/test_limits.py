"""429 with Retry-After: per-client rate limits (every ingest route, webhooks and WebSocket
messages included) and a full producer queue; never a 202 for data Kafka does not have."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.ratelimit import RateLimiter
from sources.http.settings import HttpSourceSettings
from sources.publisher import KafkaPublisher
from tests.kafka_helpers import consume
from tests.sources.http_server import serve

BATCH = "/api/v1/ingest/shop/product/batch"


def test_buckets_are_per_client_and_refill_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=1, clock=lambda: now[0])
    assert limiter.wait_time("a") == 0.0
    assert limiter.wait_time("a") == pytest.approx(0.5)
    assert limiter.wait_time("b") == 0.0  # another client, its own bucket
    now[0] = 0.5
    assert limiter.wait_time("a") == 0.0
    assert limiter.wait_time("a") > 0


def _assert_429(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "location", "details"}


@pytest.fixture
def limited(kafka: KafkaSettings) -> Iterator[TestClient]:
    settings = HttpSourceSettings(
        auth="none", rate_limit_per_s=0.01, rate_limit_burst=2, webhook_allow_unsigned=True
    )
    with TestClient(create_app(kafka, settings)) as client:
        yield client


@pytest.mark.integration
def test_rate_limit_is_a_429_and_publishes_nothing(
    limited: TestClient, kafka: KafkaSettings
) -> None:
    body = {"records": [{"name": "a"}]}
    assert [limited.post(BATCH, json=body).status_code for _ in range(2)] == [202, 202]
    _assert_429(limited.post(BATCH, json=body), "rate_limited")
    _assert_429(limited.post("/api/v1/ingest/shop/product", json={"name": "a"}), "rate_limited")
    assert len(consume(kafka, kafka.topics.raw, expected=2)) == 2


@pytest.mark.integration
def test_rate_limit_covers_webhooks_and_websocket_messages(limited: TestClient) -> None:
    webhook = "/api/v1/webhooks/ingest/shop/product"
    assert limited.post(webhook, json={"name": "a"}).status_code == 202
    with limited.websocket_connect("/api/v1/ws/ingest/shop/product") as socket:
        socket.send_text('{"name": "b"}')
        assert socket.receive_json()["type"] == "ack"
        socket.send_text('{"name": "c"}')
        refused = socket.receive_json()
        socket.send_text('{"name": "d"}')
        again = socket.receive_json()
    assert (refused["type"], refused["error"]["code"]) == ("error", "rate_limited")
    assert refused["retry_after"] >= 1
    assert again["error"]["code"] == "rate_limited"  # the socket stayed open
    _assert_429(limited.post(webhook, json={"name": "e"}), "rate_limited")


class HeldPublisher(KafkaPublisher):
    """The real publisher on the real broker, whose delivery reports are not served until
    ``release``: until then the events it produced count in its queue, as when Kafka is
    slow to acknowledge."""

    def __init__(self, kafka: KafkaSettings, queue_max_messages: int) -> None:
        self.release = threading.Event()
        super().__init__(kafka, 10.0, queue_max_messages=queue_max_messages)

    def _poll(self) -> None:
        self.release.wait()
        super()._poll()


def _post_in_background(
    client: httpx.Client, body: object
) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(client.post(BATCH, json=body)))
    sender.start()
    return sender, answers


@pytest.mark.integration
def test_full_producer_queue_is_a_429_at_once(kafka: KafkaSettings) -> None:
    publisher = HeldPublisher(kafka, queue_max_messages=3)
    app = create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        sender, first = _post_in_background(client, {"records": [{"name": "a"}]})
        deadline = time.monotonic() + 10
        while publisher.room(3):  # until the first request's event and summary are queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _assert_429(client.post(BATCH, json={"records": [{"name": "b"}] * 2}), "queue_full")
        _assert_429(client.post("/api/v1/ingest/shop/product", json={"n": 1}), "queue_full")
        publisher.release.set()
        sender.join(30)
    assert first[0].status_code == 202
    assert [m.value for m in consume(kafka, kafka.topics.raw, expected=1)] == [b'{"name":"a"}']


@pytest.mark.integration
def test_queue_full_midway_is_a_429_after_the_wait(kafka: KafkaSettings) -> None:
    publisher = HeldPublisher(kafka, queue_max_messages=2)
    settings = HttpSourceSettings(auth="none", queue_full_wait_s=0.3)
    app = create_app(kafka, settings, publisher=publisher)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        sender, answers = _post_in_background(client, {"records": [{"name": "x"}] * 5})
        time.sleep(1.0)  # the batch found the queue full midway and gave up after 0.3 s
        publisher.release.set()  # the events it did produce are acknowledged
        sender.join(30)
    _assert_429(answers[0], "queue_full")
