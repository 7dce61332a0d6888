"""The ops endpoints (/healthz, /readyz, /metrics), readiness checks against the real
broker and stores, the consumer-lag gauges, and the bounded shutdown."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from pipelines.core.metrics import CONSUMER_LAG, count
from pipelines.core.ops import (
    DEFAULT_PORTS,
    OpsServer,
    OpsSettings,
    Readiness,
    app_paths,
    ops_router,
    service_ops,
    store_checks,
)
from pipelines.core.ops_kafka import KafkaCheck, LagMonitor
from pipelines.devbroker import free_port
from sinks.postgres.settings import PostgresSinkSettings
from sinks.postgres.sink import PostgresSink
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings

ROOT = Path(__file__).resolve().parents[3]


def _fail() -> None:
    raise ConnectionError("no answer\nsecond line is dropped")


def test_readiness_reports_each_failed_check() -> None:
    status, body = Readiness({"kafka": lambda: None, "store": _fail}).report()
    assert status == 503
    assert body == {
        "status": "not ready",
        "reason": "store: no answer",
        "checks": {"kafka": "ok", "store": "no answer"},
    }


def test_ports_default_per_service_and_zero_disables() -> None:
    assert OpsSettings().port_for("transform") == 9101
    assert OpsSettings().port_for("sink-errors") == 9104
    assert OpsSettings(port=0).port_for("transform") == 0
    assert OpsSettings(port=9300).port_for("sink-sqlite") == 9300


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on (a free one, taken for the test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_default_port_gives_way_to_a_free_one(
    taken_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pipelines.core.ops")
    ops = OpsServer(Readiness(), "127.0.0.1", taken_port, fallback=True).start()
    try:
        assert ops.port != taken_port
        assert httpx.get(f"http://127.0.0.1:{ops.port}/healthz").json() == {"status": "ok"}
        assert f"default ops port {taken_port} is taken: serving on {ops.port}" in caplog.text
    finally:
        ops.stop()


def test_a_taken_port_asked_for_is_fatal(taken_port: int) -> None:
    with pytest.raises(FatalError, match=f"127.0.0.1:{taken_port}: Address already in use"):
        OpsServer(Readiness(), "127.0.0.1", taken_port).start()


def test_service_ops_falls_back_only_from_the_default_port(
    taken_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """QANAT_OPS_PORT unset: the service's default, else a free port; set: that port."""
    monkeypatch.setitem(DEFAULT_PORTS, "test-service", taken_port)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # never asked here
    caplog.set_level(logging.WARNING, "pipelines.core.ops")
    default = OpsSettings(host="127.0.0.1", lag_interval_s=0)
    with service_ops("test-service", kafka, topics=[], settings=default):
        [moved] = [r for r in caplog.records if r.getMessage().startswith("default ops port")]
        port = moved.args[1]  # type: ignore[index]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    asked = OpsSettings(port=taken_port, host="127.0.0.1", lag_interval_s=0)
    refused = service_ops("test-service", kafka, topics=[], settings=asked)
    with pytest.raises(FatalError, match="set QANAT_OPS_PORT to another port"), refused:
        pass


@pytest.fixture
def server(kafka: KafkaSettings, tmp_path: Path) -> Iterator[tuple[str, SQLiteSink]]:
    sink = SQLiteSink(SQLiteSinkSettings(path=tmp_path / "qanat.db"))
    readiness = Readiness(
        {"kafka": KafkaCheck(kafka, [kafka.topics.records], 2.0), **store_checks([sink])}
    )
    ops = OpsServer(readiness, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{ops.port}", sink
    ops.stop()
    sink.close()


@pytest.mark.integration
def test_endpoints_on_the_ops_port(server: tuple[str, SQLiteSink]) -> None:
    base, sink = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    before = httpx.get(f"{base}/readyz")
    assert before.status_code == 503  # the sink has not opened its database yet
    assert before.json()["checks"]["kafka"] == "ok"
    assert "setup() has not been called" in before.json()["reason"]
    sink.setup()
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"kafka": "ok", "store": "ok"}}
    count("sink", "upserted", "ops_test", "thing", 3)
    metrics = httpx.get(f"{base}/metrics").text
    assert (
        'qanat_events_total{outcome="upserted",stage="sink",type="thing",vertical="ops_test"}'
        in metrics
    )
    missing = httpx.get(f"{base}/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.integration
def test_readiness_says_kafka_is_away_and_topics_are_missing(kafka: KafkaSettings) -> None:
    away = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    status, body = Readiness({"kafka": KafkaCheck(away, [], 1.0)}).report()
    assert status == 503 and body["reason"].startswith("kafka: ")
    status, body = Readiness({"kafka": KafkaCheck(kafka, ["no.such.topic"], 2.0)}).report()
    assert (status, body["reason"]) == (503, "kafka: missing topic(s): no.such.topic")


@pytest.mark.integration
def test_postgres_store_ping(postgres_dsn: str) -> None:
    sink = PostgresSink(PostgresSinkSettings(dsn=postgres_dsn, table=f"ops_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(RuntimeError):
        sink.ping()
    sink.setup()
    try:
        sink.ping()
    finally:
        with sink.pool.connection() as conn:
            conn.execute(f'DROP TABLE "{sink.settings.table}"')
        sink.close()


@pytest.mark.integration
def test_consumer_lag_gauges(kafka: KafkaSettings) -> None:
    group = kafka.consumer_group(f"lag-{uuid.uuid4().hex[:6]}")
    topic = kafka.topics.records
    producer = Producer(kafka.client())
    for n in range(5):
        producer.produce(topic, b"{}", key=b"k", partition=n % 2)
    assert producer.flush(10) == 0
    monitor = LagMonitor(kafka, group, [topic], interval=60)
    assert monitor.measure() == {(topic, 0): 3, (topic, 1): 2}  # nothing committed yet
    gauge = CONSUMER_LAG.labels(group=group, topic=topic, partition="0")
    assert gauge._value.get() == 3
    committer = Consumer(kafka.client(**{"group.id": group, "enable.auto.commit": False}))
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()
    assert monitor.measure() == {(topic, 0): 1, (topic, 1): 2}
    monitor.start()
    monitor.stop()


@pytest.mark.integration
def test_service_ops_serves_and_stops(kafka: KafkaSettings) -> None:
    port = free_port()
    settings = OpsSettings(port=port, host="127.0.0.1", lag_interval_s=0.2)
    group = kafka.consumer_group("ops-service")
    with service_ops(
        "transform", kafka, topics=[kafka.topics.raw], group=group, settings=settings
    ) as ops:
        assert ops.shutdown_timeout_s == 20.0
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_router_skips_what_the_app_serves() -> None:
    app = FastAPI()

    @app.get("/healthz")
    def own() -> dict[str, str]:
        return {"status": "mine"}

    app.include_router(ops_router(Readiness({"store": _fail}), skip=app_paths(app)))
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "mine"}
    assert client.get("/readyz").status_code == 503
    assert "qanat_events" in client.get("/metrics").text


def test_a_shutdown_that_hangs_is_cut_short(tmp_path: Path) -> None:
    """run_quix: past the shutdown timeout the process exits 1 instead of hanging."""
    script = textwrap.dedent(
        """
        import time
        from pipelines.core.ops import run_quix

        class Hangs:
            def stop(self, fail=False):
                pass

            def run(self):
                self.stop()  # what Quix does on SIGTERM
                time.sleep(30)  # a flush that never returns

        run_quix(Hangs(), 0.5)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 1
    assert "shutdown did not finish within" in result.stderr


def test_the_ops_routes_leave_the_openapi_document_buildable() -> None:
    app = FastAPI()
    app.include_router(ops_router(Readiness()))
    with TestClient(app) as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200
        assert {"/healthz", "/readyz", "/metrics"} <= set(document.json()["paths"])
        assert client.get("/readyz").status_code == 200
