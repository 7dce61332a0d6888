"""``qanat up``'s own Mosquitto: a real broker whose files and port live in one directory,
stopped by its owner, and stopped at the next start when a killed owner left it running."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from pipelines.core.ports import port_answers
from pipelines.devbroker import process_alive
from pipelines.devmqtt import LocalMosquitto, mosquitto_binary

pytestmark = pytest.mark.integration


@pytest.fixture
def binary() -> str:
    found = mosquitto_binary()
    if found is None:
        raise AssertionError("no mosquitto: run scripts/mosquitto-local.sh (installs it)")
    return found


def test_runs_from_its_directory_keeps_its_port_and_stops(tmp_path: Path, binary: str) -> None:
    broker = LocalMosquitto(tmp_path / "mosquitto", binary)
    url = broker.start()
    try:
        assert url == f"mqtt://127.0.0.1:{broker.port}" and broker.port != 1883
        client = Client(CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", broker.port)
        client.disconnect()
        config = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert f"persistence_location {tmp_path / 'mosquitto' / 'data'}/" in config
        assert f"log_dest file {tmp_path / 'mosquitto' / 'mosquitto.log'}" in config
        assert (tmp_path / "mosquitto" / "mosquitto.pid").read_text() == str(broker.pid)
    finally:
        pid = broker.pid
        broker.stop()
    assert pid is not None and not process_alive(pid)
    assert not port_answers(broker.port)
    assert not (tmp_path / "mosquitto" / "mosquitto.pid").exists()
    broker.stop()  # stopped already: nothing to do
    again = LocalMosquitto(tmp_path / "mosquitto", binary)
    assert again.start() == url  # devices find it where it was
    again.stop()


def test_a_taken_port_moves_it(tmp_path: Path, binary: str) -> None:
    first = LocalMosquitto(tmp_path / "mosquitto", binary)
    first.start()
    first.stop()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first.port))
        holder.listen()
        moved = LocalMosquitto(tmp_path / "mosquitto", binary)
        try:
            moved.start()
            assert moved.port != first.port
            assert (tmp_path / "mosquitto" / "port").read_text() == str(moved.port)
        finally:
            moved.stop()


def test_one_left_running_by_a_killed_owner_is_stopped_at_the_next_start(
    tmp_path: Path, binary: str
) -> None:
    orphan = LocalMosquitto(tmp_path / "mosquitto", binary)
    orphan.start()
    pid = orphan.pid
    assert pid is not None
    successor = LocalMosquitto(tmp_path / "mosquitto", binary)  # the owner died: no stop()
    try:
        assert successor.start() == orphan.url  # its port is free again
        assert not process_alive(pid)
    finally:
        successor.stop()
        orphan.stop()  # reaps the zombie
