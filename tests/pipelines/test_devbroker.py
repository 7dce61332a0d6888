"""The local broker: the real Apache Kafka, and its one-line errors."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import TopicNames, ensure_topics
from pipelines.devbroker import LocalBroker, free_port, process_alive
from pipelines.devbroker_jars import DevBrokerError, fetch_kafka_libs


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DevBrokerError, match=f"port {port} on 127.0.0.1 is taken"):
            LocalBroker(tmp_path, port=port).start()


def test_a_data_directory_remembers_its_port(tmp_path: Path) -> None:
    assert LocalBroker(tmp_path).recorded_port() is None
    port = free_port()
    LocalBroker(tmp_path, port=port, sasl_port=free_port())._write_config()
    assert LocalBroker(tmp_path).recorded_port() == port


def test_stop_ends_a_broker_interrupted_before_its_pid_file(tmp_path: Path) -> None:
    """Ctrl-C between starting the JVM and writing broker.pid: stop() still ends it."""
    broker = LocalBroker(tmp_path, port=free_port())
    jvm = broker._process = subprocess.Popen(["sleep", "60"])  # stands in for the JVM
    assert broker.stop(timeout=5)
    assert not process_alive(jvm.pid)
    assert not broker.stop()  # reaped and forgotten: nothing left to stop


def test_missing_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevBrokerError, match="java not found on PATH"):
        LocalBroker(tmp_path, port=free_port()).start()


def test_missing_maven_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevBrokerError, match="mvn not found on PATH"):
        fetch_kafka_libs(cache_dir=tmp_path / "cache")


@pytest.mark.integration
def test_a_failed_fetch_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DevBrokerError, match="from Maven Central failed"):
        fetch_kafka_libs("0.0.0-no-such-version", cache_dir=tmp_path)


@pytest.mark.integration
def test_start_status_stop_restart_keeps_data(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker", port=free_port())
    try:
        bootstrap = broker.start()
        assert broker.status().answering
        assert broker.start() == bootstrap  # already running: nothing new is started
        settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix="kept")
        ensure_topics(settings.client(), settings.topics, 1, 1)
        assert broker.stop()
        assert not broker.status().running
        assert not broker.stop()
        broker.start()
        from confluent_kafka.admin import AdminClient

        topics = AdminClient(settings.client()).list_topics(timeout=10).topics
        assert set(TopicNames("kept").all()) <= set(topics)
    finally:
        broker.stop()
