"""``qanat source mqtt``: the MQTT source as a service (registered on ``qanat source``)."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from typing import Any

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.core.config import load
from pipelines.core.errors import FatalError
from pipelines.core.topics import ensure_topics

SERVICE = "source-mqtt"


@fatal_errors
def source_mqtt() -> None:
    """MQTT for IoT devices: subscribe to topic patterns (QoS 1, persistent session) and
    publish every message to Kafka before acknowledging it (settings: QANAT_MQTT_*)."""
    from pipelines.core.ops import OpsServer, OpsSettings, Readiness
    from pipelines.core.ops_kafka import KafkaCheck
    from sources.mqtt.source import MqttSource, MqttSourceSettings

    if importlib.util.find_spec("paho") is None:
        raise FatalError("the MQTT source needs paho-mqtt: pip install 'qanat[mqtt]'")

    _core, kafka = service_settings()
    settings = load(MqttSourceSettings)
    ops = load(OpsSettings)
    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    source = MqttSource(settings, kafka)
    topics = [kafka.topics.raw, kafka.topics.ingestions]
    readiness = Readiness(
        {"kafka": KafkaCheck(kafka, topics, ops.check_timeout_s), "mqtt": source.ping}
    )
    port = ops.port_for(SERVICE)
    fallback = ops.port is None  # a default port, not one asked for
    server = OpsServer(readiness, ops.host, port, fallback=fallback).start() if port else None
    try:
        asyncio.run(_until_signal(source, ops.shutdown_timeout_s))
    finally:
        if server is not None:
            server.stop()


async def _until_signal(source: Any, shutdown_timeout_s: float) -> None:
    """Run ``source`` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await source.run(stop, shutdown_timeout_s)
