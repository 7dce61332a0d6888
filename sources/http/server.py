"""The HTTP service's uvicorn: slow clients cut off, connections bounded, JSON errors only.

uvicorn (0.55) arms its keep-alive timeout only after a response, so a client that
connects and sends nothing, or trickles its headers or body a byte at a time, holds its
connection for ever; and the few errors uvicorn answers itself (a malformed request, its
``limit_concurrency`` 503) are plain text. :class:`GuardedProtocol`, a subclass of its
httptools protocol, adds:

- a header deadline: a request's headers must be complete ``header_timeout_s`` after the
  connection opened (or the request's first byte, on a kept-alive connection);
- a body idle timeout: while the service reads a body, ``body_timeout_s`` without a byte
  ends it (time while the service itself stopped reading, a stream's backpressure, does
  not count);
- a connection bound: beyond ``max_connections`` open connections (WebSockets included),
  a new connection is answered a 503 JSON error (``too_many_connections``, with
  ``Retry-After``) and closed, before its request is read.

A timed-out request is answered a 408 JSON error (``request_timeout``) if nothing was
answered yet, and closed; ``qanat_http_timeouts_total{phase}`` counts each. A malformed
request gets the 400 JSON error body (``invalid_http``), like every other error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from pydantic import Field
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipelines.core.config import QanatSettings
from pipelines.core.metrics import HTTP_TIMEOUTS

__all__ = ["EdgeSettings", "GuardedProtocol", "guarded_protocol", "server_config"]

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


class EdgeSettings(QanatSettings):
    """The HTTP service's limits on its clients' connections (QANAT_HTTP_...)."""

    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has, from connecting (or starting its next request), "
        "to send a request's complete headers; then a 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause, in seconds, between two pieces of a request body while "
        "the service reads it (not while it waits for Kafka); then a 408 and the "
        "connection is closed.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Most open connections (WebSockets included); a connection beyond is "
        "answered 503 too_many_connections with Retry-After, and closed.",
    )
    ws_max_in_flight: int = Field(
        256,
        ge=1,
        description="Most WebSocket messages of one socket waiting for Kafka's ack; at the "
        "bound the service stops reading that socket (TCP backpressure) until acks catch up.",
    )
    ws_key_check_s: float = Field(
        2.0,
        gt=0,
        description="How often an open WebSocket's key is checked again: a revoked key's "
        "sockets are closed with 1008 within this many seconds.",
    )
    public_metrics: bool = Field(
        False,
        description="Serve /metrics without a key; else it needs a key with the admin scope "
        "(auth keys).",
    )
    public_docs: bool = Field(
        False,
        description="Serve /docs, /redoc and /openapi.json without a key; else they need a "
        "key with the admin scope (header, or ?token=<key> for a browser).",
    )


def error_bytes(status: int, code: str, message: str, headers: dict[str, str]) -> bytes:
    """A complete ``connection: close`` HTTP/1.1 response with the JSON error body."""
    body = orjson.dumps(
        {"error": {"code": code, "message": message, "location": None, "details": []}}
    )
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS[status])]
    fields = {"content-type": "application/json", "content-length": str(len(body)), **headers}
    lines += [f"{name}: {value}".encode("latin-1") for name, value in fields.items()]
    return b"\r\n".join([*lines, b"connection: close", b"", body])


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a connection bound and JSON errors;
    :func:`guarded_protocol` sets the limits."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._phase = "headers"
        self._last_data = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            HTTP_TIMEOUTS.labels(phase="refused").inc()
            message = f"the service has {self.max_connections} connections open; retry later"
            self._refuse(503, "too_many_connections", message, {"retry-after": "1"})
            return
        self._arm("headers", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == "idle":
            self._arm("headers", self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid_http", msg.rstrip("."), {})

    def _arm(self, phase: str, delay: float) -> None:
        self._disarm()
        self._phase = phase
        self._guard = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self._phase = "idle"

    def _expired(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        if self._phase == "body":
            idle = self.loop.time() - self._last_data
            if self.flow.read_paused:  # the service is not reading: not the client's fault
                self._last_data, idle = self.loop.time(), 0.0
            if idle < self.body_timeout_s:
                self._guard = self.loop.call_later(self.body_timeout_s - idle, self._expired)
                return
        HTTP_TIMEOUTS.labels(phase=self._phase).inc()
        limit = self.header_timeout_s if self._phase == "headers" else self.body_timeout_s
        message = f"the request's {self._phase} did not arrive within {limit:g} s"
        self._refuse(408, "request_timeout", message, {})

    def _refuse(self, status: int, code: str, message: str, headers: dict[str, str]) -> None:
        """Answer (unless the app answered already) and close the connection."""
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True  # the app's receive sees a disconnect, its send a no-op
            cycle.keep_alive = False
            cycle.message_event.set()
        self._disarm()
        if not answered:
            self.transport.write(error_bytes(status, code, message, headers))
        self.transport.close()


def guarded_protocol(settings: EdgeSettings) -> type[GuardedProtocol]:
    """:class:`GuardedProtocol` with ``settings``' limits."""
    limits = {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.max_connections,
    }
    return type("QanatHttpProtocol", (GuardedProtocol,), limits)


def server_config(app: Any, settings: EdgeSettings, host: str, port: int, **kw: Any) -> Any:
    """The ``uvicorn.Config`` of the HTTP service (``kw``: log level, shutdown, ...)."""
    return uvicorn.Config(app, host=host, port=port, http=guarded_protocol(settings), **kw)
