"""The MQTT source against a real Mosquitto and the real Kafka broker: routing to vertical
and type, keys and headers, arrays, bad payloads through the transform to the DLQ, TLS
with a password, and a refused login."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from sources.mqtt.settings import MqttSourceSettings, MqttTopic
from tests.kafka_helpers import consume
from tests.services import Services
from tests.sources.mqtt_helpers import (
    Mosquitto,
    SourceThread,
    names,
    publish,
    running,
    self_signed_certificate,
    wait_until,
)

pytestmark = pytest.mark.integration


def _settings(url: str, **fields: object) -> MqttSourceSettings:
    return MqttSourceSettings(
        url=url,
        client_id=f"test-{uuid.uuid4().hex[:12]}",
        ingestion_window_s=0.3,
        session_expiry_s=300,  # the shared broker forgets the test's session soon after
        **fields,
    )


def test_messages_land_on_the_raw_topic(mqtt_url: str, kafka: KafkaSettings) -> None:
    vertical, plant = f"v{uuid.uuid4().hex[:10]}", f"p{uuid.uuid4().hex[:10]}"
    topics = [
        MqttTopic(pattern="qanat/{vertical}/{type}"),
        MqttTopic(pattern="qanat/{vertical}/{type}/{device_id}"),
        MqttTopic(pattern=f"{plant}/+/{{device_id}}/temp", vertical="plant", type="temperature"),
    ]
    messages = [
        (f"qanat/{vertical}/product", b'{"name": "lamp", "source_id": "p1"}'),
        (f"qanat/{vertical}/reading/dev-1", b'{"name": "r1", "celsius": 21.5}'),
        (f"qanat/{vertical}/reading/dev-2", b'{"name": "r2", "source_id": "own"}'),
        (f"qanat/{vertical}/batch", b'[{"name": "a1"}, {"name": "a2", "source_id": "a2"}]'),
        (f"qanat/{vertical}/product", b"not json {"),
        (f"{plant}/hall-3/sensor-9/temp", b'{"name": "t9", "celsius": 30}'),
    ]
    with running(_settings(mqtt_url, topics=topics), kafka):
        publish(mqtt_url, messages)
        landed = consume(kafka, kafka.topics.raw, expected=7, timeout=30)
    assert len(landed) == 7
    by_value = {event.value: event for event in landed}

    lamp = by_value[b'{"name": "lamp", "source_id": "p1"}']
    assert lamp.key == f"{vertical}/product/p1".encode()
    assert lamp.headers["qanat.vertical"] == vertical
    assert lamp.headers["qanat.type"] == "product"
    assert lamp.headers["qanat.source"] == "mqtt"
    assert lamp.headers["qanat.mqtt.topic"] == f"qanat/{vertical}/product"
    assert "qanat.device_id" not in lamp.headers

    reading = by_value[b'{"name": "r1", "celsius": 21.5}']
    assert reading.key == f"{vertical}/reading/dev-1".encode()  # the device id from the topic
    assert reading.headers["qanat.device_id"] == "dev-1"
    own = by_value[b'{"name": "r2", "source_id": "own"}']
    assert own.key == f"{vertical}/reading/own".encode()  # the payload's source_id wins
    assert own.headers["qanat.device_id"] == "dev-2"

    first, second = by_value[b'{"name":"a1"}'], by_value[b'{"name":"a2","source_id":"a2"}']
    assert first.headers["qanat.ingestion_id"] == second.headers["qanat.ingestion_id"]
    assert first.key == first.headers["qanat.event_id"].encode()
    assert first.headers["qanat.event_id"] != second.headers["qanat.event_id"]
    assert second.key == f"{vertical}/batch/a2".encode()

    bad = by_value[b"not json {"]  # published as it came: the transform dead-letters it
    assert bad.headers["qanat.type"] == "product"

    fixed = by_value[b'{"name": "t9", "celsius": 30}']
    assert (fixed.headers["qanat.vertical"], fixed.headers["qanat.type"]) == (
        "plant",
        "temperature",
    )
    assert fixed.key == b"plant/temperature/sensor-9"

    summaries = [orjson.loads(m.value or b"") for m in consume(kafka, kafka.topics.ingestions, 4)]
    accepted: dict[tuple[str, str], int] = {}
    for summary in summaries:
        assert summary["source"] == "mqtt"
        key = (summary["vertical"], summary["type"])
        accepted[key] = accepted.get(key, 0) + summary["accepted"]
    assert accepted == {
        (vertical, "product"): 2,
        (vertical, "reading"): 2,
        (vertical, "batch"): 2,
        ("plant", "temperature"): 1,
    }
    ingestion_ids = {event.headers["qanat.ingestion_id"] for event in landed}
    assert ingestion_ids == {summary["ingestion_id"] for summary in summaries}


def test_bad_payloads_reach_the_dlq_with_their_reason(
    mqtt_url: str, kafka: KafkaSettings, services: Services
) -> None:
    vertical = f"v{uuid.uuid4().hex[:10]}"
    services.env.update(
        QANAT_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        QANAT_KAFKA_TOPIC_PREFIX=kafka.topic_prefix,
        QANAT_OPS_PORT="0",
    )
    services.start("transform", "transform")
    topic = f"qanat/{vertical}/reading"
    with running(_settings(mqtt_url), kafka):
        publish(mqtt_url, [(topic, b'{"name": "ok"}'), (topic, b"\x00garbage"), (topic, b"[7]")])
        records = consume(kafka, kafka.topics.records, expected=1, timeout=90)
        dead = consume(kafka, kafka.topics.dlq, expected=2, timeout=30)
    assert names(record.value for record in records) == ["ok"], services.log_tails()
    reasons = {letter.value: letter.headers["qanat.error.reason"] for letter in dead}
    assert set(reasons) == {b"\x00garbage", b"7"}
    assert "JSON" in reasons[b"\x00garbage"]
    assert "object" in reasons[b"7"]
    assert all(letter.headers["qanat.source"] == "mqtt" for letter in dead)


def test_tls_with_username_and_password(tmp_path: Path, kafka: KafkaSettings) -> None:
    cert, key = self_signed_certificate(tmp_path)
    broker = Mosquitto(tmp_path / "broker", tls=(cert, key), users={"device": "s3cret"}).start()
    try:
        settings = _settings(broker.url, tls_ca_file=cert, username="device", password="s3cret")
        with running(settings, kafka):
            publish(
                broker.url,
                [("qanat/secure/reading/d1", b'{"name": "over tls"}')],
                username="device",
                password="s3cret",
                ca_file=cert,
            )
            landed = consume(kafka, kafka.topics.raw, expected=1, timeout=30, settle=0.2)
        assert names(event.value for event in landed) == ["over tls"]

        refused = _settings(broker.url, tls_ca_file=cert, username="device", password="wrong")
        wrong = SourceThread(refused, kafka)
        wrong.start(wait=False)
        wrong.join(20)
        assert isinstance(wrong.error, FatalError)
        assert "refused" in str(wrong.error)
    finally:
        broker.stop()


def test_an_untrusted_certificate_is_not_connected(
    tmp_path: Path, kafka: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    broker = Mosquitto(tmp_path / "broker", tls=(cert, key)).start()
    source = SourceThread(_settings(broker.url, reconnect_max_s=1), kafka)  # system CAs only
    try:
        source.start(wait=False)
        log = broker.directory / "mosquitto.log"
        wait_until(lambda: "unknown ca" in log.read_text(errors="replace"), 10, "a refused TLS")
        assert not source.ready()
        assert source.error is None  # it goes on retrying, with backoff
        wait_until(lambda: "cannot reach the MQTT broker" in caplog.text, 10, "a warning")
    finally:
        source.stop()
        broker.stop()
