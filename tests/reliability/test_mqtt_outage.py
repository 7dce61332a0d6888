"""Mosquitto down 30 s in the middle of a device's load: nothing it got a PUBACK for is lost.

A Mosquitto of the test's own (its own config, free port and persistence directory; the
shared broker on 1883 is never touched) feeds the real ``qanat source mqtt``, transform
and SQLite sink, child processes on the shared Kafka broker under a unique topic prefix.
A device (paho-mqtt, QoS 1, MQTT 3.1.1 persistent session) publishes every id in several
versions, with increasing event times, at a steady pace. In the middle of the load the
broker is stopped (SIGTERM, as for a restart or an upgrade: it saves its persistence file
on the way out), kept down 30 s and started again. The device keeps publishing meanwhile:
paho keeps every message the broker has not acknowledged and sends it again once it is
connected, as a device should. The source must notice (``/readyz`` answers 503), survive,
reconnect by itself and resume its session.

*Accepted*, for MQTT, is a message the broker acknowledged to the device with a PUBACK:
there the device's responsibility ends (it may forget the message), so from there on
qanat's promise holds. At the end every published message has its PUBACK, and the store
holds exactly the latest accepted version of every id: nothing lost, no duplicates (the
redelivered messages of a resumed session are absorbed by the idempotent upsert), no dead
letters. (A ``kill -9`` of Mosquitto is another matter: it does not sync each message to
disk, so it may lose what it acknowledged since its last autosave; that is Mosquitto's
durability, not qanat's.) The run is a row of RELIABILITY.md: "Mosquitto down 30 s".
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from tests.reliability.chaos import ROOT, TYPE, VERTICAL, ChaosPlan, checksum, stored_versions
from tests.reliability.outage import end_offset, report, wait_for
from tests.reliability.results import ScenarioResult
from tests.services import Services
from tests.sources.mqtt_helpers import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SCENARIO = "Mosquitto down 30 s"
OUTAGE_S = 30.0
IDS, VERSIONS, PACE_S = 50, 10, 0.08  # 500 messages over ~40 s
OUTAGE_AT = 60  # messages published when Mosquitto goes down: ~5 s of load before, ~5 s after


class Device(threading.Thread):
    """Publishes each record at QoS 1 at a steady pace, connected or not; remembers when
    the broker acknowledged what."""

    def __init__(self, broker: Mosquitto, records: list[dict[str, object]]) -> None:
        super().__init__(daemon=True, name="mqtt-device")
        self.records = records
        self.sent: list[tuple[MQTTMessageInfo, dict[str, object]]] = []
        # mid -> monotonic time of its PUBACK (is_published() and wait_for_publish() give
        # up on a message published while disconnected, which paho keeps and sends later)
        self.pubacks: dict[int, float] = {}
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"device-{uuid.uuid4().hex[:10]}",
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_puback
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()  # paho's thread: reconnects and sends again what is due
        self.failed: BaseException | None = None

    def run(self) -> None:
        try:
            for record in self.records:
                device_id = int(str(record["source_id"]).removeprefix("e")) % 3
                topic = f"qanat/{VERTICAL}/{TYPE}/dev-{device_id}"
                info = self.client.publish(topic, orjson.dumps(record), qos=1)
                self.sent.append((info, record))
                time.sleep(PACE_S)
        except BaseException as exc:  # reported by the test
            self.failed = exc

    def _on_puback(self, _client: Client, _userdata: object, mid: int, *_: object) -> None:
        self.pubacks.setdefault(mid, time.monotonic())

    def acknowledged(self) -> list[dict[str, object]]:
        return [record for info, record in self.sent if info.mid in self.pubacks]

    def all_acknowledged(self) -> bool:
        return len(self.acknowledged()) == len(self.sent)

    def accepted(self) -> dict[str, int]:
        """source_id -> the latest version the broker acknowledged."""
        latest: dict[str, int] = {}
        for record in self.acknowledged():
            source_id, version = str(record["source_id"]), int(str(record["version"]))
            latest[source_id] = max(version, latest.get(source_id, 0))
        return latest

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ready(url: str) -> int:
    try:
        return httpx.get(url, timeout=1.0).status_code
    except httpx.HTTPError:
        return 0


def pipeline(services: Services, kafka: KafkaSettings, broker: Mosquitto, work: Path) -> str:
    """Starts the MQTT source, the transform and the SQLite sink; the source's /readyz."""
    ops_port = free_port()
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
        "QANAT_MQTT_URL": broker.url,
        "QANAT_MQTT_CLIENT_ID": f"qanat-{uuid.uuid4().hex[:10]}",
        "QANAT_MQTT_RECONNECT_MAX_S": "2",
        "QANAT_MQTT_INGESTION_WINDOW_S": "1",
        "QANAT_SQLITE_PATH": str(work / "qanat.db"),
        "QANAT_TRANSFORM_SCHEMA_DIR": str(ROOT / "schemas"),
        "QANAT_OPS_PORT": str(ops_port),  # the source's; the others' are off
    }
    services.start("source-mqtt", "source", "mqtt")
    services.env["QANAT_OPS_PORT"] = "0"
    services.start("transform", "transform")
    services.start("sink-sqlite", "sink", "sqlite")
    readyz = f"http://127.0.0.1:{ops_port}/readyz"
    services.wait_http(readyz)
    return readyz


def test_mosquitto_down_30s_loses_nothing_acknowledged(
    services: Services, kafka: KafkaSettings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    db = tmp_path / "qanat.db"
    records = [
        r for batch in ChaosPlan(ids=IDS, versions=VERSIONS, batch=IDS).batches() for r in batch
    ]
    device: Device | None = None
    try:
        readyz = pipeline(services, kafka, broker, tmp_path)
        device = Device(broker, records)
        device.start()
        wait_for("rows in the store", lambda: len(stored_versions(db)) > 0, services, 30, 0.2)
        wait_for(
            "the load to be under way", lambda: len(device.sent) >= OUTAGE_AT, services, 30, 0.1
        )

        broker.stop()
        stopped = time.monotonic()
        before = len(device.sent)
        wait_for("the source to see the outage", lambda: ready(readyz) == 503, services, 10)
        while (left := stopped + OUTAGE_S - time.monotonic()) > 0:
            services.check_alive()
            time.sleep(min(0.5, left))
        during, restarting = len(device.sent) - before, time.monotonic()
        broker.start()
        down_s = time.monotonic() - stopped  # until it answers again
        acked_in_outage = sum(stopped < t < restarting for t in list(device.pubacks.values()))
        wait_for("the source to reconnect", lambda: ready(readyz) == 200, services, 30, 0.2)

        device.join(60)
        assert device.failed is None and not device.is_alive(), device.failed
        after = len(device.sent) - before - during
        wait_for("every PUBACK", device.all_acknowledged, services, 30, 0.2)
        accepted = device.accepted()
        expected = checksum(accepted.items())
        try:
            wait_for(
                "the store to converge",
                lambda: checksum(stored_versions(db)) == expected,
                services,
                60,
            )
        finally:  # a run that lost records is reported too
            stored = stored_versions(db)
            by_id = dict(stored)
            result = ScenarioResult(
                SCENARIO,
                sent=len(records),
                accepted=len(device.acknowledged()),
                ids=len(accepted),
                stored=len(stored),
                lost=sum(by_id.get(i, 0) < v for i, v in accepted.items()),
                extra=sum(v > accepted.get(i, 0) for i, v in by_id.items()),
                duplicated=len(stored) - len(by_id),
                server_errors=0,
                outage_s=round(down_s, 1),
                component="Mosquitto",
                acked_in_outage=acked_in_outage,
                checksum_expected=expected,
                checksum_stored=checksum(stored),
                seconds=round(time.monotonic() - began, 1),
            )
            report(request, result)
    finally:
        if device is not None:
            device.close()
        broker.stop()

    print(f"{result}; published {before} before, {during} during, {after} after the outage")
    assert result.ok, result
    assert result.sent == result.accepted == IDS * VERSIONS and result.stored == IDS
    assert during > 0 and after > 0, "the outage was not in the middle of the load"
    assert down_s >= OUTAGE_S
    services.check_alive()
    assert "resumed session" in (services.logs / "source-mqtt.log").read_text()
    assert end_offset(kafka, kafka.topics.dlq) == 0, "dead letters"
