"""Live read: new normalized records of one vertical and type, pushed as they arrive.

Two routes stream what the transform writes to the ``<prefix>.records`` topic:

- WebSocket ``/api/v1/ws/records/{vertical}/{type}``: a first message
  ``{"type": "subscribed", "vertical", "type", "from"}`` once the feed is in place (every
  record written after it is delivered), then one message per record:
  ``{"type": "record", "partition": 0, "offset": 42, "record": {...}}``. What the client
  sends is ignored; closing the socket ends the feed.
- Server-sent events ``GET /api/v1/sse/records/{vertical}/{type}``
  (``text/event-stream``): a ``: subscribed`` comment, then per record an event
  ``event: record``, ``id: <partition>:<offset>``, ``data: <record JSON>``; a
  ``: keepalive`` comment every ``heartbeat_s`` without records keeps proxies from
  closing the connection.

``?from=earliest`` starts at the beginning of the topic instead of its end (the default,
``from=latest``). Each connection has its own Kafka consumer, assigned every partition
of the records topic, that never commits (no consumer group state) and is closed when the
client goes; only records whose key starts with ``{vertical}/{type}/`` are sent.

Authentication (``live_auth``, the HTTP source's ``Authenticator.connection_key``): the
``read`` scope on the vertical, from ``Authorization: Bearer <key>``, or, for browsers
(EventSource and WebSocket cannot set that header), ``?token=<key>`` or the WebSocket
subprotocols ``qanat.v1`` + ``bearer.<key>``. A refused WebSocket is closed with code 1008
and the reason; a refused SSE request is a 401/403 with the JSON error body.

>>> sse_event(LiveRecord(0, 7, b'{"a": 1}'))
b'event: record\\nid: 0:7\\ndata: {"a": 1}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from pipelines.core.config import KafkaSettings
from pipelines.core.httperrors import bad_identifiers, error_docs, error_response

logger = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
POLL_S = 0.25
POLL_BATCH = 500
QUEUE_BATCHES = 64
STARTS = ("latest", "earliest")
SSE_MEDIA = "text/event-stream"
LiveAuth = Callable[[HTTPConnection, str, str], Any]


class LiveRecord(NamedTuple):
    partition: int
    offset: int
    value: bytes


class FeedUnavailableError(Exception):
    """The records topic cannot be read (Kafka down, topic missing)."""


def sse_event(record: LiveRecord) -> bytes:
    data = b"data: " + record.value.replace(b"\n", b"\ndata: ")
    return b"event: record\nid: %d:%d\n%s\n\n" % (record.partition, record.offset, data)


def ws_message(record: LiveRecord) -> bytes:
    head = b'{"type":"record","partition":%d,"offset":%d,"record":' % (
        record.partition,
        record.offset,
    )
    return head + record.value + b"}"


class LiveFeed:
    """One connection's consumer of the records topic, polled by its own thread into an
    asyncio queue (bounded: a slow client stops the polling, not the service).

    :meth:`start` blocks (Kafka metadata): call it from a thread.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        key_prefix: bytes,
        earliest: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.kafka, self.key_prefix, self.earliest, self.loop = kafka, key_prefix, earliest, loop
        self.queue: asyncio.Queue[list[LiveRecord]] = asyncio.Queue(QUEUE_BATCHES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def start(self) -> None:
        """Assign every partition at its current end (or beginning): every record written
        after this returns is delivered. FeedUnavailableError if Kafka cannot tell."""
        consumer = Consumer(
            self.kafka.client(
                **{
                    "group.id": f"qanat-live-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                }
            )
        )
        topic = self.kafka.topics.records
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            if not partitions:
                raise FeedUnavailableError(f"topic {topic} has no partitions")
            starts = [self._start_offset(consumer, topic, p) for p in sorted(partitions)]
        except FeedUnavailableError:
            consumer.close()
            raise
        except Exception as exc:  # KafkaException, or a missing topic's error
            consumer.close()
            raise FeedUnavailableError(f"cannot read {topic}: {exc}") from exc
        consumer.assign(starts)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._poll, name="qanat-live", daemon=True)
        self._thread.start()

    def _start_offset(self, consumer: Consumer, topic: str, partition: int) -> TopicPartition:
        if self.earliest:
            return TopicPartition(topic, partition, OFFSET_BEGINNING)
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return TopicPartition(topic, partition, high)

    def _poll(self) -> None:
        assert self._consumer is not None
        try:
            while not self._stop.is_set():
                batch = [
                    LiveRecord(m.partition() or 0, m.offset() or 0, m.value() or b"null")
                    for m in self._consumer.consume(POLL_BATCH, POLL_S)
                    if m.error() is None and (m.key() or b"").startswith(self.key_prefix)
                ]
                if batch:
                    self._hand_over(batch)
        finally:
            self._consumer.close()

    def _hand_over(self, batch: list[LiveRecord]) -> None:
        """Put ``batch`` in the queue, waiting while it is full (unless stopping)."""
        future = asyncio.run_coroutine_threadsafe(self.queue.put(batch), self.loop)
        while not self._stop.is_set():
            try:
                future.result(POLL_S)
                return
            except TimeoutError:
                continue
        future.cancel()

    async def next_batch(self, timeout: float) -> list[LiveRecord]:
        """The next records; [] when none came within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return []

    def close(self) -> None:
        """Stop the feed without waiting: its thread closes the consumer within
        ``POLL_S`` (so this is safe in a cancelled task's clean-up)."""
        self._stop.set()


async def open_feed(kafka: KafkaSettings, vertical: str, type_: str, start: str) -> LiveFeed:
    feed = LiveFeed(
        kafka, f"{vertical}/{type_}/".encode(), start == "earliest", asyncio.get_running_loop()
    )
    await run_in_threadpool(feed.start)
    return feed


def refusal(exc: Exception) -> tuple[int, str, str] | None:
    """``(status, code, message)`` of an authentication refusal (an exception with a 401
    or 403 ``status``, like the HTTP source's ApiError); None for any other error."""
    status = getattr(exc, "status", None)
    if status not in (401, 403):
        return None
    return int(status), str(getattr(exc, "code", "forbidden")), str(getattr(exc, "message", exc))


SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The stream of new records, as server-sent events.",
        "content": {SSE_MEDIA: {"schema": {"type": "string"}}},
    },
    **error_docs(400, 401, 403, 503),
}


def live_routes(
    router: APIRouter, kafka: KafkaSettings, live_auth: LiveAuth | None, heartbeat_s: float
) -> None:
    """Add the WebSocket and SSE live-read routes to ``router`` (prefix ``/api/v1``)."""

    async def refused(conn: HTTPConnection, vertical: str) -> tuple[int, str, str] | None:
        """None when the connection may read ``vertical``, else why not."""
        if live_auth is None:
            return None
        try:
            await run_in_threadpool(live_auth, conn, "read", vertical)
        except Exception as exc:
            why = refusal(exc)
            if why is None:
                raise
            return why
        return None

    @router.websocket("/ws/records/{vertical}/{type}")
    async def records_socket(socket: WebSocket, vertical: str, type: str) -> None:
        offered = [p.strip() for p in socket.headers.get("sec-websocket-protocol", "").split(",")]
        await socket.accept(subprotocol="qanat.v1" if "qanat.v1" in offered else None)
        why = await refused(socket, vertical)  # the key first, then what it asks for
        if why is not None:
            await socket.close(POLICY_VIOLATION, f"{why[1]}: {why[2]}"[:120])
            return
        start = socket.query_params.get("from", "latest")
        problem = bad_identifiers(vertical, type)
        if problem is not None or start not in STARTS:
            reason = "bad vertical or type" if problem is not None else "from: latest or earliest"
            await socket.close(POLICY_VIOLATION, reason)
            return
        try:
            feed = await open_feed(kafka, vertical, type, start)
        except FeedUnavailableError as exc:
            logger.warning("live read: %s", exc)
            await socket.close(TRY_AGAIN_LATER, "Kafka is unavailable; retry later")
            return
        try:
            hello = {"type": "subscribed", "vertical": vertical, "record_type": type, "from": start}
            await socket.send_json(hello)
            await _pump_socket(socket, feed, heartbeat_s)
        finally:
            feed.close()

    @router.get("/sse/records/{vertical}/{type}", tags=["records"], responses=SSE_RESPONSES)
    async def records_events(
        vertical: str,
        type: str,
        request: Request,
        start: Annotated[str, Query(alias="from", description="latest or earliest")] = "latest",
    ) -> Response:
        """New records of the vertical and type as server-sent events (see
        :mod:`pipelines.control.live`); ``?from=earliest`` replays the topic first."""
        why = await refused(request, vertical)  # the key first, then what it asks for
        if why is not None:
            return error_response(*why, "header.authorization")
        problem = bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        if start not in STARTS:
            return error_response(400, "invalid_from", "from is latest or earliest", "query.from")
        try:
            feed = await open_feed(kafka, vertical, type, start)
        except FeedUnavailableError as exc:
            response = error_response(503, "kafka_unavailable", f"{exc}; retry later")
            response.headers["Retry-After"] = "5"
            return response
        return StreamingResponse(
            _sse(feed, heartbeat_s),
            media_type=SSE_MEDIA,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _sse(feed: LiveFeed, heartbeat_s: float) -> AsyncIterator[bytes]:
    try:
        yield b": subscribed\n\n"
        while True:
            batch = await feed.next_batch(heartbeat_s)
            yield b"".join(map(sse_event, batch)) if batch else b": keepalive\n\n"
    finally:
        feed.close()


async def _pump_socket(socket: WebSocket, feed: LiveFeed, heartbeat_s: float) -> None:
    """Send the feed's records until the client goes."""
    gone = asyncio.create_task(_until_disconnect(socket))
    try:
        while not gone.done():
            batch_task = asyncio.create_task(feed.next_batch(heartbeat_s))
            await asyncio.wait({batch_task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not batch_task.done():
                batch_task.cancel()
                return
            for record in batch_task.result():
                await socket.send_text(ws_message(record).decode())
    except (WebSocketDisconnect, OSError):
        return
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone


async def _until_disconnect(socket: WebSocket) -> None:
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
