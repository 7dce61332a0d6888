"""Real Mosquitto brokers for the MQTT source's tests: the shared one (``mqtt_url``) and
private ones a test may stop and start (persistence on), optionally with TLS and a
password file; a publisher; running the source in-process."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from sources.mqtt.source import MqttSource, MqttSourceSettings
from tests.kafka_helpers import Landed


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).is_file():
        raise AssertionError("no mosquitto: run scripts/mosquitto-local.sh (installs it)")
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A private Mosquitto on a free loopback port, its data kept across restarts."""

    def __init__(
        self,
        directory: Path,
        tls: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.directory, self.port = directory, free_port()
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        (directory / "data").mkdir(parents=True, exist_ok=True)
        lines = [
            "user root",
            "persistence true",
            f"persistence_location {directory / 'data'}/",
            f"log_dest file {directory / 'mosquitto.log'}",
            f"listener {self.port} 127.0.0.1",
        ]
        if users:
            passwords = directory / "passwords"
            for user, password in users.items():
                create = [] if passwords.exists() else ["-c"]
                subprocess.run(
                    ["mosquitto_passwd", *create, "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_answers(self.port), 10, f"mosquitto on port {self.port}")
        return self

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA), made with openssl: (cert, key)."""
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def publish(
    url: str,
    messages: Iterable[tuple[str, bytes]],
    qos: int = 1,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
) -> None:
    """Publish every (topic, payload) and wait until the broker acknowledged each."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    client = Client(CallbackAPIVersion.VERSION2, client_id="")
    if username:
        client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=str(ca_file))
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class SourceThread:
    """:class:`MqttSource` running in its own thread and event loop, like the service."""

    def __init__(
        self, settings: MqttSourceSettings, kafka: KafkaSettings, shutdown_timeout_s: float = 10
    ) -> None:
        self.source = MqttSource(settings, kafka)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self.source.run(self._stop, self.shutdown_timeout_s)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    def ready(self) -> bool:
        try:
            self.source.ping()
            return True
        except ConnectionError:
            return False

    def start(self, wait: bool = True) -> SourceThread:
        self._thread.start()
        if wait:
            wait_until(lambda: self.ready() or not self._thread.is_alive(), 20, "subscribed")
            assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the MQTT source did not stop"

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@contextmanager
def running(settings: MqttSourceSettings, kafka: KafkaSettings) -> Iterator[SourceThread]:
    thread = SourceThread(settings, kafka).start()
    try:
        yield thread
    finally:
        thread.stop()
    if thread.error is not None:
        raise thread.error


def names(values: Iterable[bytes | None]) -> list[Any]:
    found = []
    for value in values:
        try:
            obj = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj.get("name"))
    return found


def consume_names(
    kafka: KafkaSettings, topic: str, wanted: set[str], timeout: float = 60.0
) -> list[Landed]:
    """Every message of ``topic`` from the start, read until the ``name`` of each record in
    ``wanted`` was seen (redelivered duplicates do not end the wait early) or ``timeout``."""
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    landed: list[Landed] = []
    missing = set(wanted)
    deadline = time.monotonic() + timeout
    try:
        while missing and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            landed.append(Landed.of(message))
            missing.difference_update(names([message.value()]))
    finally:
        consumer.close()
    return landed
