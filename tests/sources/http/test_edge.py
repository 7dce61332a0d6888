"""The hardened edge against the real server (the service's uvicorn protocol) and broker:
slow clients cut off with a JSON 408, connections bounded with a JSON 503, malformed
requests a JSON 400, hang-ups counted not logged, /metrics behind the admin scope with
bounded labels."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from pipelines.core import metrics
from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key
from sources.http.settings import HttpSourceSettings
from tests.sources.edge_server import read_all, serve_edge

pytestmark = pytest.mark.integration


@pytest.fixture
def edge(kafka: KafkaSettings) -> Iterator[tuple[str, int]]:
    settings = HttpSourceSettings(
        auth="none",
        header_timeout_s=0.5,
        body_timeout_s=0.5,
        max_connections=3,
        webhook_secret="s3cret",
    )
    with serve_edge(create_app(kafka, settings), settings) as address:
        yield address


def error_of(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw
    return int(head.split(b" ")[1]), orjson.loads(body)["error"]


def test_a_silent_client_is_answered_408_and_closed(edge: tuple[str, int]) -> None:
    with socket.create_connection(edge) as conn:
        status, error = error_of(read_all(conn))
    assert (status, error["code"]) == (408, "request_timeout")
    assert "headers" in str(error["message"])


def test_trickled_headers_are_cut_off(edge: tuple[str, int]) -> None:
    with socket.create_connection(edge) as conn:
        conn.settimeout(60)
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed under us: what the test wants
        status, error = error_of(read_all(conn))
    assert (status, error["code"]) == (408, "request_timeout")


def test_a_stalled_body_is_cut_off(edge: tuple[str, int]) -> None:
    head = b"POST /api/v1/ingest/shop/product HTTP/1.1\r\nHost: x\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    with socket.create_connection(edge) as conn:
        conn.sendall(head)
        status, error = error_of(read_all(conn))
    assert (status, error["code"]) == (408, "request_timeout")
    assert "body" in str(error["message"])


def test_connections_beyond_the_bound_get_a_json_503(kafka: KafkaSettings) -> None:
    settings = HttpSourceSettings(auth="none", max_connections=2, header_timeout_s=120)
    with serve_edge(create_app(kafka, settings), settings) as address:
        held = [socket.create_connection(address) for _ in range(2)]
        try:
            time.sleep(0.2)  # let the server take them (no assertion on time)
            with socket.create_connection(address) as extra:
                status, error = error_of(read_all(extra))
        finally:
            for conn in held:
                conn.close()
        assert (status, error["code"]) == (503, "too_many_connections")
        assert httpx.get(f"http://{address[0]}:{address[1]}/healthz").status_code == 200


def test_a_malformed_request_gets_the_json_error_body(edge: tuple[str, int]) -> None:
    with socket.create_connection(edge) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost x\r\nbad header\r\n\r\n")
        status, error = error_of(read_all(conn))
    assert (status, error["code"]) == (400, "invalid_http")


def test_a_client_hanging_up_mid_body_is_counted_not_logged(
    edge: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    before = REGISTRY.get_sample_value("qanat_http_client_disconnects_total") or 0.0
    head = b"POST /api/v1/webhooks/ingest/shop/product HTTP/1.1\r\nHost: x\r\n"
    head += b"X-Webhook-Signature: sha256=00\r\nX-Webhook-Timestamp: %d\r\n" % time.time()
    head += b"Content-Type: application/json\r\n"
    head += b"Content-Length: 1000\r\n\r\n[{"
    caplog.set_level(logging.INFO)
    with socket.create_connection(edge) as conn:
        conn.sendall(head)
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while REGISTRY.get_sample_value("qanat_http_client_disconnects_total") == before:
        assert time.monotonic() < deadline, "the hang-up was never counted"
        time.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_metrics_need_an_admin_key_and_labels_are_bounded(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    _k, writer = create_key(store, "w", ["write"], None)
    _k, admin = create_key(store, "a", ["admin"], None)
    settings = HttpSourceSettings(keys_path=tmp_path / "keys.db")
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", len(metrics._SEEN["vertical"]) + 1)
    with serve_edge(create_app(kafka, settings, keys=store), settings) as (host, port):
        base = f"http://{host}:{port}"
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/docs").status_code == 401
        as_writer = {"Authorization": f"Bearer {writer}"}
        assert httpx.get(f"{base}/metrics", headers=as_writer).status_code == 403
        for vertical in ("edgefirst", "edgesecond", "edgethird"):
            answer = httpx.post(
                f"{base}/api/v1/ingest/{vertical}/thing/batch",
                json={"records": [{"name": "a"}]},
                headers=as_writer,
            )
            assert answer.status_code == 202, answer.text
        text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}).text
        assert httpx.get(f"{base}/docs?token={admin}").status_code == 200
        assert httpx.get(f"{base}/openapi.json?token={admin}").status_code == 200
    assert 'vertical="edgefirst"' in text
    assert 'vertical="edgesecond"' not in text and 'vertical="edgethird"' not in text
    assert 'vertical="other"' in text
