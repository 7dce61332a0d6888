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
(policy violation) and the reason. The key is checked once, when the socket opens.

Each message counts against the key's rate limit (:mod:`sources.ratelimit`). A message
over ``max_body_bytes`` is refused with ``message_too_large``; one over the server's
frame limit (uvicorn's ``ws_max_size``, 16 MiB) closes the socket with code 1009.

>>> ack("i1", ["e1"], 3)["seq"]
3
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from pipelines.errors import RetriableError
from pipelines.topics import TopicNames
from sources.auth import SUBPROTOCOL, ApiKey, Authenticator
from sources.http_body import identifier
from sources.http_errors import ApiError, kafka_unavailable
from sources.http_events import publish_records
from sources.http_webhooks import parse_webhook_body
from sources.ratelimit import RateLimiter, client_identity

if TYPE_CHECKING:
    from sources.http import HttpSourceSettings

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
        values, records = parse_webhook_body(data, settings.max_records)
        ingestion_id, event_ids = await publish_records(
            socket.app.state.publisher,
            topics,
            vertical,
            type_,
            records,
            values,
            settings.queue_full_wait_s,
            settings.max_record_bytes,
        )
        return ack(ingestion_id, event_ids, 0)

    @router.websocket("/ws/ingest/{vertical}/{type}")
    async def ingest_socket(socket: WebSocket, vertical: str, type: str) -> None:
        accepted, key = await _accept(socket, authenticator, "write", vertical)
        if not accepted:
            return
        client = client_identity(key.id if key else None, _host(socket))
        seq = 0
        while True:
            data = await _receive(socket)
            if data is None:
                return
            seq += 1
            try:
                limiter.check(client)
                answer = await publish(socket, vertical, type, data)
            except ApiError as exc:
                answer = error_message(exc, seq)
            except RetriableError as exc:
                logger.warning("WebSocket ingest: %s", exc)
                answer = error_message(kafka_unavailable(exc), seq)
            answer["seq"] = seq
            try:
                await socket.send_text(orjson.dumps(answer).decode())
            except (WebSocketDisconnect, OSError):  # gone before its answer
                return

    return router


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
