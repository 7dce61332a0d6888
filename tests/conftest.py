"""Fixtures that find the real components (design.md, "Local broker").

Kafka: ``QANAT_TEST_KAFKA_BOOTSTRAP`` if set; else testcontainers' Kafka when a Docker
engine answers; else the project's local Apache Kafka broker, one per test session.
PostgreSQL: ``QANAT_TEST_POSTGRES_DSN`` if set; else testcontainers; else the Debian
server that ``scripts/postgres-local.sh`` starts (the test script runs it).
"""

from __future__ import annotations

import gc
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import ensure_topics
from pipelines.devbroker import LocalBroker, free_port
from tests.services import Services

ROOT = Path(__file__).resolve().parent.parent


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a real Kafka broker for this test session."""
    if os.environ.get("QANAT_TEST_KAFKA_BOOTSTRAP"):
        yield os.environ["QANAT_TEST_KAFKA_BOOTSTRAP"]
        return
    if docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        # Confluent Platform 8.0 is Apache Kafka 4.0, the image testcontainers drives.
        with KafkaContainer("confluentinc/cp-kafka:8.0.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), port=free_port(), heap="768m")
    try:
        yield broker.start()
    finally:
        # Clients the tests dropped are destroyed now, while the broker still answers, so
        # none keeps reconnecting to a stopped broker (and logging it) at interpreter exit.
        gc.collect()
        broker.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Settings for a pipeline isolated by a unique topic prefix, its topics created."""
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}", partitions=2
    )
    ensure_topics(settings.client(), settings.topics, settings.partitions, 1)
    return settings


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a real PostgreSQL server for this test session."""
    if os.environ.get("QANAT_TEST_POSTGRES_DSN"):
        yield os.environ["QANAT_TEST_POSTGRES_DSN"]
        return
    if docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    script = ROOT / "scripts" / "postgres-local.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"no PostgreSQL: set QANAT_TEST_POSTGRES_DSN or run {script}: "
            f"{result.stderr.strip()[-500:]}"
        )
    yield result.stdout.strip().splitlines()[-1]


def env_or_local_script(env_name: str, script_name: str, what: str) -> str:
    """The address in ``env_name`` if set, else the last line ``scripts/<script_name>``
    prints after installing and starting a local server (Debian packages)."""
    if os.environ.get(env_name):
        return os.environ[env_name]
    script = ROOT / "scripts" / script_name
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"no {what}: set {env_name} or run {script}: {result.stderr}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """The URL of a real MQTT broker: ``QANAT_TEST_MQTT_URL``, else the Debian Mosquitto
    that ``scripts/mosquitto-local.sh`` installs and starts (the test script runs it)."""
    return env_or_local_script("QANAT_TEST_MQTT_URL", "mosquitto-local.sh", "Mosquitto")


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    """A DSN of a real MariaDB/MySQL server: ``QANAT_TEST_MYSQL_DSN``, else the Debian
    MariaDB that ``scripts/mariadb-local.sh`` installs and starts (the test script runs it)."""
    return env_or_local_script("QANAT_TEST_MYSQL_DSN", "mariadb-local.sh", "MariaDB")


@pytest.fixture(scope="session")
def neo4j_url() -> str:
    """The Bolt URL of a real Neo4j server: ``QANAT_TEST_NEO4J_URL``, else the one that
    ``scripts/neo4j-local.sh`` fetches from Maven Central and starts (the test script runs it)."""
    if os.environ.get("QANAT_TEST_NEO4J_URL"):
        return os.environ["QANAT_TEST_NEO4J_URL"]
    script = ROOT / "scripts" / "neo4j-local.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"no Neo4j: set QANAT_TEST_NEO4J_URL or run {script}: {result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The reliability report again when a reliability scenario ran (one that recorded a
    result sets ``config._qanat_reliability_ran``: tests/reliability/, the PostgreSQL
    outage): the rows of the scenarios this session ran, merged into the report there.
    It goes outside git's tracking (``QANAT_REPORT_DIR``, default ``.qanat/reports``);
    ``QANAT_WRITE_RELIABILITY=1`` regenerates the tracked RELIABILITY.md instead."""
    if getattr(session.config, "_qanat_reliability_ran", False):
        from tests.reliability.results import RECORDED, write_report

        session.config._qanat_report = write_report(scenarios=RECORDED)  # type: ignore[attr-defined]


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._qanat_started = time.time()  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the session wrote the reliability report, if it did (under pytest-xdist the
    workers write it: the controller names it when it changed during the session)."""
    from tests.reliability.results import REPORT, report_path

    path = getattr(terminalreporter.config, "_qanat_report", None)
    started = getattr(terminalreporter.config, "_qanat_started", time.time())
    if path is None and report_path().exists() and report_path().stat().st_mtime >= started:
        path = report_path()
    if path is None:
        return

    hint = "" if path == REPORT else " (QANAT_WRITE_RELIABILITY=1 regenerates RELIABILITY.md)"
    terminalreporter.write_line(f"reliability report: {path}{hint}")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    env["QANAT_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONUNBUFFERED"] = "1"
    # no service binds its default ops port (9101...): a test that reads one sets a free one
    env["QANAT_OPS_PORT"] = "0"
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Services(env, logs)
    yield running
    running.stop()
