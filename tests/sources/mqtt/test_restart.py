"""Nothing is lost when Mosquitto restarts (a private broker, persistence on) or when the
MQTT source is killed: its persistent session keeps what was published meanwhile (QoS 1),
and what it had not acknowledged is delivered again."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Literal

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from sources.mqtt.settings import MqttSourceSettings
from tests.kafka_helpers import consume
from tests.services import Services
from tests.sources.mqtt_helpers import (
    Mosquitto,
    SourceThread,
    consume_names,
    names,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration


def _readings(topic: str, label: str, count: int) -> list[tuple[str, bytes]]:
    return [
        (f"{topic}/dev-{n % 3}", orjson.dumps({"name": f"{label}-{n}", "n": n}))
        for n in range(count)
    ]


def _expected(*labels: str, count: int) -> set[str]:
    return {f"{label}-{n}" for label in labels for n in range(count)}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_mosquitto_restart_loses_nothing(
    protocol: Literal["5", "3.1.1"], mqtt_url: str, tmp_path: Path, kafka: KafkaSettings
) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    settings = MqttSourceSettings(
        url=broker.url,
        protocol=protocol,
        client_id=f"test-{uuid.uuid4().hex[:12]}",
        reconnect_min_s=1,
        reconnect_max_s=2,
        ingestion_window_s=0.5,
    )
    topic, count = "qanat/plant/reading", 10
    source = SourceThread(settings, kafka).start()
    try:
        publish(broker.url, _readings(topic, "before", count))
        consume_names(kafka, kafka.topics.raw, _expected("before", count=count), timeout=30)

        broker.restart()  # the source reconnects by itself and resumes its session
        wait_until(source.ready, 20, "the source to reconnect")
        publish(broker.url, _readings(topic, "between", count))

        source.stop()
        publish(broker.url, _readings(topic, "while-away", count))  # queued in the session
        broker.restart()  # ... and kept in Mosquitto's persistence file
        source = SourceThread(settings, kafka).start()
        wanted = _expected("before", "between", "while-away", count=count)
        landed = consume_names(kafka, kafka.topics.raw, wanted, timeout=30)
    finally:
        source.stop()
        broker.stop()
    assert set(names(event.value for event in landed)) == wanted
    assert source.error is None


def test_nothing_is_acknowledged_before_kafka_has_it(mqtt_url: str, kafka: KafkaSettings) -> None:
    settings = MqttSourceSettings(
        url=mqtt_url,
        client_id=f"test-{uuid.uuid4().hex[:12]}",
        session_expiry_s=300,
        topics=[f"r{uuid.uuid4().hex[:10]}/{{vertical}}/{{type}}/{{device_id}}"],
        delivery_timeout_s=1,
    )
    topic, count = settings.topics[0].pattern.split("/")[0] + "/plant/reading", 5
    nowhere = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    cut_off = SourceThread(settings, nowhere, shutdown_timeout_s=0.5).start()
    try:
        publish(mqtt_url, _readings(topic, "unstored", count))
        wait_until(lambda: cut_off.source.in_flight == count, 10, "the messages to arrive")
    finally:
        cut_off.stop()  # Kafka never acknowledged them: neither does the source
    assert not consume(kafka, kafka.topics.raw, expected=0, timeout=1, settle=0.5)

    source = SourceThread(settings, kafka).start()  # the same session: delivered again
    try:
        wanted = _expected("unstored", count=count)
        landed = consume_names(kafka, kafka.topics.raw, wanted, timeout=30)
    finally:
        source.stop()
    assert set(names(event.value for event in landed)) == wanted


def test_a_killed_source_loses_nothing(
    mqtt_url: str, kafka: KafkaSettings, services: Services
) -> None:
    ops_port, root = free_port(), f"r{uuid.uuid4().hex[:10]}"
    services.env.update(
        QANAT_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        QANAT_KAFKA_TOPIC_PREFIX=kafka.topic_prefix,
        QANAT_OPS_PORT=str(ops_port),
        QANAT_MQTT_URL=mqtt_url,
        QANAT_MQTT_CLIENT_ID=f"test-{root}",
        QANAT_MQTT_SESSION_EXPIRY_S="300",  # the shared broker forgets it after the test
        QANAT_MQTT_TOPICS=orjson.dumps([root + "/{vertical}/{type}/{device_id}"]).decode(),
    )
    topic, count = f"{root}/plant/reading", 20
    readyz = f"http://127.0.0.1:{ops_port}/readyz"
    source = services.start("source-mqtt", "source", "mqtt")
    services.wait_http(readyz)

    publish(mqtt_url, _readings(topic, "before", count))
    source.send_signal(signal.SIGKILL)  # mid-flight: whatever was not in Kafka is not acked
    source.wait(10)
    del services.processes["source-mqtt"]
    publish(mqtt_url, _readings(topic, "while-down", count))

    again = services.start("source-mqtt-again", "source", "mqtt")
    services.wait_http(readyz)
    publish(mqtt_url, _readings(topic, "after", count))
    wanted = _expected("before", "while-down", "after", count=count)
    landed = consume_names(kafka, kafka.topics.raw, wanted, timeout=60)
    again.send_signal(signal.SIGTERM)  # a clean stop: finish, acknowledge, disconnect
    assert again.wait(30) == 0, services.log_tails()

    assert set(names(event.value for event in landed)) == wanted, services.log_tails()
    keys = {event.key for event in landed}
    assert keys == {f"plant/reading/dev-{n}".encode() for n in range(3)}
    assert "resumed session" in (services.logs / "source-mqtt-again.log").read_text()
