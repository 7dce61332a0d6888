"""The WebSocket writer on the real server and broker with a real client (``websockets``):
a fast sender gets backpressure and every ack, 100k-level nesting is a clear error with
the socket kept, and a revoked key's socket is closed with 1008."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key
from sources.http.settings import HttpSourceSettings
from tests.sources.edge_server import serve_edge

pytestmark = pytest.mark.integration
PATH = "/api/v1/ws/ingest/shop/product"


async def _flood(url: str, n: int) -> list[dict[str, object]]:
    async with connect(url, max_queue=None) as socket:

        async def send_all() -> None:
            for i in range(n):
                await socket.send(orjson.dumps({"name": f"n{i}"}).decode())

        sender = asyncio.create_task(send_all())
        answers = [orjson.loads(await socket.recv()) for _ in range(n)]
        await sender
        await socket.ping()  # still open and answering
        return answers


def test_ten_thousand_fast_messages_all_get_their_ack(kafka: KafkaSettings) -> None:
    settings = HttpSourceSettings(auth="none", ws_max_in_flight=64)
    with serve_edge(create_app(kafka, settings), settings) as (host, port):
        answers = asyncio.run(_flood(f"ws://{host}:{port}{PATH}", 10_000))
    assert [a["type"] for a in answers] == ["ack"] * 10_000
    assert [a["seq"] for a in answers] == list(range(1, 10_001))


async def _deep(url: str) -> tuple[dict[str, object], dict[str, object]]:
    async with connect(url) as socket:
        await socket.send(b"[" * 100_000 + b"]" * 100_000)
        error = orjson.loads(await socket.recv())
        await socket.send('{"name": "after"}')
        return error, orjson.loads(await socket.recv())


def test_a_hundred_thousand_levels_are_refused_and_the_socket_kept(
    kafka: KafkaSettings,
) -> None:
    settings = HttpSourceSettings(auth="none")
    with serve_edge(create_app(kafka, settings), settings) as (host, port):
        error, after = asyncio.run(_deep(f"ws://{host}:{port}{PATH}"))
    assert (error["type"], error["error"]["code"]) == ("error", "too_deep")  # type: ignore[index]
    assert (after["type"], after["seq"]) == ("ack", 2)


async def _revoked(url: str, store: SQLiteKeyStore, key_id: str) -> int | None:
    async with connect(url) as socket:
        await socket.send('{"name": "before"}')
        assert orjson.loads(await socket.recv())["type"] == "ack"
        store.revoke(key_id)
        try:
            while True:  # keeps writing, as a client holding a leaked key would
                await socket.send('{"name": "more"}')
                await asyncio.wait_for(socket.recv(), 60)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def test_a_revoked_key_loses_its_open_socket(kafka: KafkaSettings, tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    key, plaintext = create_key(store, "w", ["write"], None)
    settings = HttpSourceSettings(keys_path=tmp_path / "keys.db", ws_key_check_s=0.2)
    with serve_edge(create_app(kafka, settings, keys=store), settings) as (host, port):
        code = asyncio.run(_revoked(f"ws://{host}:{port}{PATH}?token={plaintext}", store, key.id))
    assert code == 1008
