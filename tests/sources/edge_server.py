"""The HTTP service as ``qanat source http`` runs it (:func:`sources.http.server.server_config`),
in a thread on a free port, for the edge tests: raw sockets, WebSocket clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from pipelines.devbroker import free_port
from sources.http.server import server_config
from sources.http.settings import HttpSourceSettings


@contextmanager
def serve_edge(app: FastAPI, settings: HttpSourceSettings) -> Iterator[tuple[str, int]]:
    """Run ``app`` with the service's protocol and limits; yield (host, port)."""
    port = free_port()
    config = server_config(
        app, settings, "127.0.0.1", port, log_level="info", lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-edge-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test HTTP server did not start")
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(60)


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    conn.settimeout(60)
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
