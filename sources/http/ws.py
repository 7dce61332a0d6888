"""The WebSocket writer: ``/api/v1/ws/ingest/{vertical}/{type}``.

A client (a browser, a device) keeps one socket open and sends records: each text (or
binary) message is one record object or a JSON array of them. Each message gets one
answer, in order, once Kafka acknowledged its records (never before):

- ``{"type": "ack", "seq": 1, "ingestion_id": "...", "record_count": 2,
  "event_ids": ["...", "..."]}``;
- or ``{"type": "error", "seq": 1, "error": {"code", "message", "location", "details"}}``
  (the error body of every qanat HTTP error; ``retry_after`` seconds for
  ``rate_limited``, ``queue_full`` and ``kafka_unavailable``). A bad message (not JSON,
  not an object or array of objects, too large, too many records, a bad vertical or type)
  does not close the socket.

``seq`` numbers the client's messages on this socket from 1. Each message is one
ingestion (``GET /api/v1/ingestions/{id}``).

Authentication, with the ``write`` scope on the vertical: ``Authorization: Bearer <key>``
on the handshake; browsers, which cannot set that header, pass ``?token=<key>`` or offer
the subprotocols ``qanat.v1`` and ``bearer.<key>`` (the server selects ``qanat.v1``). An
unknown key or a vertical out of the key's scope closes the socket with code 1008
(policy violation) and the reason. The key is checked when the socket opens and again
every ``ws_key_check_s`` seconds: a revoked key's sockets are closed with 1008.

Messages are read and produced ahead of their acks, up to ``ws_max_in_flight`` per
socket; at that bound the service stops reading the socket (TCP backpressure: a fast
sender's sends block) until Kafka's acks catch up, so the socket is never dropped and
its keepalive pings are read in time. A message nested deeper than
:data:`pipelines.core.records.MAX_NESTING_DEPTH` is refused with ``too_deep``, one with a key
twice in an object with ``duplicate_key`` (:mod:`sources.http.jsoncheck`: found by a scan of
its bytes, before any parser recurses), the socket kept.

Each message counts against the key's rate limit (:mod:`sources.http.ratelimit`). A message
over ``max_body_bytes`` is refused with ``message_too_large``; one over the server's
frame limit (uvicorn's ``ws_max_size``, 16 MiB) closes the socket with code 1009.

>>> ack("i1", ["e1"], 3)["seq"]
3
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from pipelines.core.errors import RetriableError
from pipelines.core.topics import TopicNames
from sources.http.auth import SUBPROTOCOL, ApiKey, Authenticator
from sources.http.body import identifier
from sources.http.errors import ApiError, kafka_unavailable
from sources.http.events import publish_records
from sources.http.jsoncheck import too_deep_error
from sources.http.ratelimit import RateLimiter, client_identity
from sources.http.webhooks import parse_webhook_body

if TYPE_CHECKING:
    from sources.http.settings import HttpSourceSettings

logger = logging.getLogger(__name__)
POLICY_VIOLATION = 1008
MAX_REASON = 120  # a close reason is at most 123 bytes


def ack(ingestion_id: str, event_ids: list[str], seq: int) -> dict[str, Any]:
    return {
        "type": "ack",
        "seq": seq,
        "ingestion_id": ingestion_id,
        "record_count": len(event_ids),
        "event_ids": event_ids,
    }


def error_message(error: ApiError, seq: int) -> dict[str, Any]:
    return {"type": "error", "seq": seq, **error.message_body()}


def ws_ingest_router(
    topics: TopicNames,
    settings: HttpSourceSettings,
    authenticator: Authenticator,
    limiter: RateLimiter,
) -> APIRouter:
    """The WebSocket writer's route (the app's state holds the publisher)."""
    router = APIRouter(prefix="/api/v1")

    async def publish(socket: WebSocket, vertical: str, type_: str, data: bytes) -> dict[str, Any]:
        vertical, type_ = identifier("vertical", vertical), identifier("type", type_)
        if len(data) > settings.max_body_bytes:
            limit = settings.max_body_bytes
            raise ApiError(413, "message_too_large", f"the message is over {limit} bytes", "body")
        records = parse_webhook_body(data, settings.max_records)
        ingestion_id, event_ids = await publish_records(
            socket.app.state.publisher,
            topics,
            vertical,
            type_,
            records.keys,
            records.values,
            settings.queue_full_wait_s,
            socket.app.state.max_record_bytes,
            records.where,
        )
        return ack(ingestion_id, event_ids, 0)

    @router.websocket("/ws/ingest/{vertical}/{type}")
    async def ingest_socket(socket: WebSocket, vertical: str, type: str) -> None:
        accepted, key = await _accept(socket, authenticator, "write", vertical)
        if not accepted:
            return
        client = client_identity(key.id if key else None, _host(socket))

        async def one(data: bytes, seq: int) -> dict[str, Any]:
            try:
                limiter.check(client)
                result = await publish(socket, vertical, type, data)
            except ApiError as exc:
                result = error_message(exc, seq)
            except RetriableError as exc:
                logger.warning("WebSocket ingest: %s", exc)
                result = error_message(kafka_unavailable(exc), seq)
            except RecursionError:  # found by the scan first: kept as a safety net
                result = error_message(too_deep_error("body"), seq)
            result["seq"] = seq
            return result

        await _session(socket, one, settings.ws_max_in_flight, _watch(socket, key))

    async def _watch(socket: WebSocket, key: ApiKey | None) -> None:
        """Close the socket with 1008 once its key is revoked."""
        if key is None:  # auth is off: nothing to revoke
            await asyncio.Event().wait()
        while await run_in_threadpool(authenticator.is_live, key):
            await asyncio.sleep(settings.ws_key_check_s)
        logger.info("API key %s revoked: closing its WebSocket", key.id if key else None)
        with suppress(RuntimeError, OSError):  # closed already
            await socket.close(POLICY_VIOLATION, "revoked_api_key: this API key was revoked")

    return router


Answer = asyncio.Task[dict[str, Any]]


async def _session(socket: WebSocket, one: Any, window: int, watcher: Any) -> None:
    """Read messages and start each one's publish, at most ``window`` unacknowledged; a
    writer task sends the answers in order. Returns once the client or the key is gone."""
    pending: asyncio.Queue[Answer | None] = asyncio.Queue(maxsize=window)
    writer = asyncio.create_task(_send_answers(socket, pending))
    watch = asyncio.create_task(watcher)
    seq = 0
    try:
        while not writer.done() and not watch.done():
            data = await _receive(socket)
            if data is None:
                break
            seq += 1
            await pending.put(asyncio.create_task(one(data, seq)))  # full: stop reading
    finally:
        watch.cancel()
        await pending.put(None)
        await writer


async def _send_answers(socket: WebSocket, pending: asyncio.Queue[Answer | None]) -> None:
    """Send each answer once its publish is done, in message order; once the socket is
    gone, only wait for the rest (they are in Kafka's hands already)."""
    gone = False
    while (task := await pending.get()) is not None:
        answer = await task
        if gone:
            continue
        try:
            await socket.send_text(orjson.dumps(answer).decode())
        except (WebSocketDisconnect, OSError, RuntimeError):  # gone (or closed: revoked)
            gone = True


async def _accept(
    socket: WebSocket, authenticator: Authenticator, scope: str, vertical: str
) -> tuple[bool, ApiKey | None]:
    """Accept the socket and check its key: (False, None) when it is refused (closed
    with 1008 and why), else (True, the key)."""
    offered = [p.strip() for p in socket.headers.get("sec-websocket-protocol", "").split(",")]
    await socket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        key: ApiKey | None = await run_in_threadpool(
            authenticator.connection_key, socket, scope, vertical
        )
    except ApiError as exc:
        await socket.close(POLICY_VIOLATION, f"{exc.code}: {exc.message}"[:MAX_REASON])
        return False, None
    return True, key


async def _receive(socket: WebSocket) -> bytes | None:
    """The next message's bytes; None once the client is gone."""
    try:
        message = await socket.receive()
    except WebSocketDisconnect:
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    return text.encode() if text is not None else bytes(message.get("bytes") or b"")


def _host(socket: WebSocket) -> str | None:
    return socket.client.host if socket.client else None
