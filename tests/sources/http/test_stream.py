"""NDJSON streaming ingest against the real broker, through a real socket (uvicorn), so
the body really arrives in chunks and a full producer queue really stops the reading."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from pipelines.core.records import RawEvent
from pipelines.devbroker import free_port
from sources.http.app import create_app
from sources.http.settings import HttpSourceSettings
from sources.publisher import Acks, KafkaPublisher
from tests.kafka_helpers import consume
from tests.sources.http_server import serve

pytestmark = pytest.mark.integration
PATH = "/api/v1/ingest/shop/product/stream"
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
def base_url(kafka: KafkaSettings) -> Iterator[str]:
    settings = HttpSourceSettings(auth="none", max_line_bytes=200, stream_max_errors=3)
    with serve(create_app(kafka, settings)) as url:
        yield url


def paced(chunks: list[bytes], pause: float = 0.01) -> Iterator[bytes]:
    """Each chunk its own write, with a pause, so the server reads them one by one."""
    for chunk in chunks:
        yield chunk
        time.sleep(pause)


def post_stream(url: str, content: Iterator[bytes] | bytes, **headers: str) -> httpx.Response:
    return httpx.post(url + PATH, content=content, headers=headers or NDJSON, timeout=120)


def test_good_bad_empty_and_over_long_lines(base_url: str, kafka: KafkaSettings) -> None:
    first = b'{"name": "Lamp", "source_id": "s1"}'
    split_item = b'{"title": "Rain", "idempotency_key": "k5"}'
    last = b'{"name": "last"}'
    chunks = [
        first + b"\n\n",  # 1: accepted, 2: empty
        b"not json\n[1, 2]\n",  # 3: invalid JSON, 4: not an object
        split_item[:10],  # 5: one line in three chunks
        split_item[10:20],
        split_item[20:] + b"\r\n",
        *[b'{"x": "' + b"y" * 100] * 5,  # 6: 500 bytes in 5 chunks, over the 200 limit
        b'"}\n   \n',  # 7: blank
        last,  # 8: no final newline
    ]
    response = post_stream(base_url, paced(chunks))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert body["rejected"] == 3
    assert [(e["line"], e["code"]) for e in body["errors"]] == [
        (3, "invalid_json"),
        (4, "not_an_object"),
        (6, "line_too_long"),
    ]
    assert all(e["message"] for e in body["errors"])
    assert body["errors_omitted"] == 0
    landed = consume(kafka, kafka.topics.raw, expected=3)
    assert sorted(m.value or b"" for m in landed) == sorted([first, split_item, last])
    keys = {m.value: m.key for m in landed}
    assert keys[first] == b"shop/product/s1"
    assert keys[split_item] == b"shop/product/k5"
    assert {m.headers["qanat.ingestion_id"] for m in landed} == {body["ingestion_id"]}
    assert len({m.headers["qanat.event_id"] for m in landed}) == 3
    assert {m.headers["qanat.source"] for m in landed} == {"http"}
    assert (
        keys[last] == next(m for m in landed if m.value == last).headers["qanat.event_id"].encode()
    )


def test_errors_list_is_capped_and_the_rest_counted(base_url: str) -> None:
    body = b"".join(b"bad %d\n" % i for i in range(10)) + b'{"name": "ok"}\n'
    response = post_stream(base_url, body, **{"content-type": "application/jsonl"})
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 10)
    assert [e["line"] for e in answer["errors"]] == [1, 2, 3]
    assert answer["errors_omitted"] == 7


def test_fifty_thousand_lines_all_land(base_url: str, kafka: KafkaSettings) -> None:
    total, per_chunk = 50_000, 997  # chunk edges fall mid-line

    def body() -> Iterator[bytes]:
        data = b"".join(
            b"oops\n" if i % 1000 == 999 else b'{"name": "n%d", "source_id": "%d"}\n' % (i, i)
            for i in range(total)
        )
        for start in range(0, len(data), per_chunk * 40):
            yield data[start : start + per_chunk * 40]

    response = post_stream(base_url, body())
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["rejected"] == total // 1000
    assert answer["accepted"] == total - total // 1000
    assert answer["errors_omitted"] == answer["rejected"] - 3
    landed = consume(kafka, kafka.topics.raw, expected=answer["accepted"], timeout=180)
    assert len(landed) == answer["accepted"]
    assert len({m.key for m in landed}) == answer["accepted"]
    assert {m.headers["qanat.ingestion_id"] for m in landed} == {answer["ingestion_id"]}


def test_a_full_producer_queue_slows_the_stream_but_loses_nothing(kafka: KafkaSettings) -> None:
    publisher = KafkaPublisher(kafka, delivery_timeout_s=30.0, queue_max_messages=5)
    app = create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)
    total = 3000
    data = b"".join(b'{"name": "n%d", "source_id": "%d"}\n' % (i, i) for i in range(total))
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    with serve(app) as url:
        response = post_stream(url, iter(chunks))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == total
    assert publisher.queue_full_waits > 0  # the queue really was full, and the stream waited
    landed = consume(kafka, kafka.topics.raw, expected=total)
    assert len(landed) == total


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/json"}, {"content-type": "text/plain"}, {}],
)
def test_stream_needs_ndjson(kafka: KafkaSettings, headers: dict[str, str]) -> None:
    with TestClient(create_app(kafka, HttpSourceSettings(auth="none"))) as client:
        response = client.post(PATH, content=b'{"name": "a"}\n', headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["location"] == "header.content-type"


def test_batch_does_not_take_ndjson(kafka: KafkaSettings) -> None:
    with TestClient(create_app(kafka, HttpSourceSettings(auth="none"))) as client:
        response = client.post(
            "/api/v1/ingest/shop/product/batch", content=b'{"name": "a"}\n', headers=NDJSON
        )
    assert response.status_code == 415


def test_stream_with_a_bad_path_is_400(kafka: KafkaSettings) -> None:
    with TestClient(create_app(kafka, HttpSourceSettings(auth="none"))) as client:
        response = client.post("/api/v1/ingest/shop/Bad!/stream", content=b"{}\n", headers=NDJSON)
    assert response.status_code == 400
    assert response.json()["error"]["location"] == "path.type"


def test_kafka_down_mid_stream_is_a_503_with_counts(kafka: KafkaSettings) -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    publisher = KafkaPublisher(dead, delivery_timeout_s=2.0)
    app = create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)
    body = b'{"name": "a"}\nnope\n{"name": "b"}\n'
    with TestClient(app) as client:
        response = client.post(PATH, content=body, headers=NDJSON)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "kafka_unavailable"
    assert (error["produced"], error["acknowledged"], error["rejected"]) == (2, 0, 1)
    assert error["lines_read"] == 3
    assert error["ingestion_id"]


class GatedPublisher(KafkaPublisher):
    """A publisher whose queue is 'full' until the test opens the gate, as when Kafka is
    slow: ``produce`` awaits, exactly like the BufferError wait of the real one."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(kafka)
        self.gate = threading.Event()

    async def produce(self, topic: str, event: RawEvent, acks: Acks) -> None:
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        await super().produce(topic, event, acks)


def test_a_waiting_producer_stops_the_client_through_tcp(kafka: KafkaSettings) -> None:
    lines, line = 10_000, b'{"name": "n", "pad": "' + b"x" * 10_000 + b'"}\n'
    total = lines * len(line)  # ~100 MB, made lazily: the client never holds it either
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(lines // 10):
            sent += 10 * len(line)
            yield line * 10

    publisher = GatedPublisher(kafka)
    result: list[httpx.Response] = []
    with serve(create_app(kafka, HttpSourceSettings(auth="none"), publisher=publisher)) as url:
        client = threading.Thread(target=lambda: result.append(post_stream(url, body())))
        client.start()
        time.sleep(3)
        blocked_at = sent
        time.sleep(1)
        assert sent == blocked_at, "the client kept sending while the server did not read"
        assert sent < total // 3, f"{sent} of {total} bytes sent while the server waited"
        publisher.gate.set()
        client.join(180)
    assert result[0].status_code == 202, result[0].text
    assert result[0].json()["accepted"] == lines
