"""Managed Kafka by configuration alone: a broker whose only client listener asks for SASL
(PLAIN), and the whole pipeline reaching it through ``QANAT_KAFKA_CLIENT_CONFIG``.

The broker is a separate :class:`LocalBroker` started by this test (the shared one is
never restarted). A client without the SASL settings gets no metadata from it, so every
client that works here - the topics CLI, the HTTP source's producer and readiness check,
the transform's Quix application and schema registry, the sink's Quix application, its
dead-letter producer, its readiness check and its consumer-lag monitor - got the
security settings.
"""

from __future__ import annotations

import gc
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.core.config import KafkaSettings
from pipelines.devbroker import LocalBroker, free_port, metadata_answers
from tests.kafka_helpers import consume
from tests.services import Services

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "PLAIN",
    "sasl.username": "qanat",
    "sasl.password": "s3cret",
}


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sasl_port = free_port()
    broker = LocalBroker(
        tmp_path_factory.mktemp("sasl-broker"),
        port=free_port(),
        sasl_port=sasl_port,
        sasl_users={"qanat": "s3cret"},
        heap="384m",
    )
    broker.start()
    try:
        yield f"127.0.0.1:{sasl_port}"
    finally:
        gc.collect()  # the test's clients go before their broker does
        broker.stop()


def _rows(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT source_id FROM records")]
        except sqlite3.OperationalError:
            return []


def test_pipeline_on_a_sasl_listener(
    sasl_bootstrap: str, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not metadata_answers(sasl_bootstrap, 3.0)  # without SASL: no answer
    kafka = KafkaSettings(
        bootstrap_servers=sasl_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        partitions=1,
        client_config=SASL,
    )
    env = {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": sasl_bootstrap,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": "1",
        "QANAT_KAFKA_CLIENT_CONFIG": orjson.dumps(SASL).decode(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    created = CliRunner().invoke(app, ["topics", "create", "--timeout", "20"])
    assert created.exit_code == 0, created.output

    http_port, sink_ops = free_port(), free_port()
    db = tmp_path / "qanat.db"
    services.env |= env | {
        "QANAT_HTTP_PORT": str(http_port),
        "QANAT_HTTP_AUTH": "none",
        "QANAT_SQLITE_PATH": str(db),
        "QANAT_TRANSFORM_SCHEMA_DIR": str(ROOT / "schemas"),
        "QANAT_OPS_PORT": "0",
        "QANAT_OPS_LAG_INTERVAL_S": "0.5",
    }
    services.start("source-http", "source", "http")
    services.start("transform", "transform")
    services.env["QANAT_OPS_PORT"] = str(sink_ops)
    services.start("sink-sqlite", "sink", "sqlite")
    services.wait_http(f"http://127.0.0.1:{http_port}/readyz")
    services.wait_http(f"http://127.0.0.1:{sink_ops}/readyz")

    records = [
        {"name": "Lamp", "source_id": "p1", "price": 3},
        {"name": "Desk", "source_id": "p2", "price": 90},
        {"name": "Broken", "source_id": "p3", "price": -1},  # schema: to the DLQ
    ]
    response = httpx.post(
        f"http://127.0.0.1:{http_port}/api/v1/ingest/shop/product/batch",
        json={"records": records},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    producer = Producer(kafka.client())  # a malformed record: the sink dead-letters it
    producer.produce(kafka.topics.records, b'{"vertical": "shop"}', b"shop/product/x")
    assert producer.flush(20) == 0
    del producer

    deadline = time.monotonic() + 60
    while sorted(_rows(db)) != ["p1", "p2"]:
        services.check_alive()
        assert time.monotonic() < deadline, services.log_tails()
        time.sleep(0.3)
    letters = consume(kafka, kafka.topics.dlq, 2, timeout=60)
    stages = sorted(letter.headers["qanat.error.stage"] for letter in letters)
    assert stages == ["sink", "validate"], services.log_tails()
    deadline = time.monotonic() + 20
    while "qanat_consumer_lag{" not in httpx.get(f"http://127.0.0.1:{sink_ops}/metrics").text:
        assert time.monotonic() < deadline, services.log_tails()
        time.sleep(0.3)
    checked = CliRunner().invoke(app, ["topics", "check", "--partitions", "1"])
    assert checked.exit_code == 0, checked.output
