"""A real local HTTP server for the pull-source tests: routes are plain functions, every
request is logged, and failures can be scripted (a 429 with Retry-After, a 500, ...)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialized unless bytes
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request], Reply]


@dataclass
class PullServer:
    """Serves ``routes[(method, path)]``; scripted failures for a path come first."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failures: dict[str, list[Reply]] = field(default_factory=dict)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, method: str, path: str) -> Callable[[Route], Route]:
        def register(handler: Route) -> Route:
            self.routes[(method, path)] = handler
            return handler

        return register

    def fail_next(self, path: str, *replies: Reply) -> None:
        """The next requests to ``path`` get these replies, in order, before the route."""
        with self.lock:
            self.failures.setdefault(path, []).extend(replies)

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.path == path]

    def handle(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            scripted = self.failures.get(request.path)
            if scripted:
                return scripted.pop(0)
        handler = self.routes.get((request.method, request.path))
        return handler(request) if handler else Reply(404, {"error": "no route"})


def _handler(server: PullServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                {name.lower(): value for name, value in self.headers.items()},
                orjson.loads(raw) if raw else None,
            )
            reply = server.handle(request)
            body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
            self.send_response(reply.status)
            content_type = "application/json" if not isinstance(reply.body, bytes) else "text/xml"
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = _serve  # noqa: N815 - the names http.server looks up
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


@contextmanager
def pull_server() -> Iterator[PullServer]:
    """A started server on a free port of 127.0.0.1, stopped afterwards."""
    state = PullServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Catalog:
    """Products that change over time, served by the REST and GraphQL test routes: each
    has an ``updated_at`` that only grows; queries filter by ``updated_at > since``."""

    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: int = 0

    lock: threading.Lock = field(default_factory=threading.Lock)

    def upsert(self, product_id: str, name: str) -> None:
        with self.lock:  # the server's threads read while a test changes it
            self.clock += 1
            self.products[product_id] = {
                "id": product_id,
                "title": name,
                "updated_at": f"2026-01-01T00:{self.clock // 60:02d}:{self.clock % 60:02d}Z",
            }

    def since(self, since: str | None) -> list[dict[str, Any]]:
        with self.lock:
            rows = sorted(self.products.values(), key=lambda p: p["updated_at"])
        return [p for p in rows if since is None or p["updated_at"] > since]


def catalog_of(count: int) -> Catalog:
    catalog = Catalog()
    for number in range(1, count + 1):
        catalog.upsert(f"p{number:02d}", f"Product {number}")
    return catalog
