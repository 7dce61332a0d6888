"""The local development broker: the real Apache Kafka, single-node KRaft, on loopback.

The broker jars come from Maven Central through ``mvn`` into a cache directory that is
reused once filled (:mod:`pipelines.devbroker_jars`); the broker runs as
``java -cp 'libs/*' kafka.Kafka`` in a data directory of its own. Tests, benchmarks and
``qanat up`` all use this class.

>>> broker = LocalBroker(Path("/tmp/qanat-broker"), port=19092)   # doctest: +SKIP
>>> broker.start()                                                 # doctest: +SKIP
'127.0.0.1:19092'
>>> broker.stop()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.ports import free_port as free_port  # re-exported: tests and up use it
from pipelines.core.ports import port_is_free as port_is_free
from pipelines.devbroker_jars import (
    DEFAULT_CACHE_DIR,
    KAFKA_VERSION,
    DevBrokerError,
    fetch_kafka_libs,
    require_tool,
)

logger = logging.getLogger(__name__)

_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: {level}
      AppenderRef:
        - ref: STDOUT
"""


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    answering: bool


@dataclass
class LocalBroker:
    """A single-node KRaft Kafka broker whose files all live under ``data_dir``."""

    data_dir: Path
    port: int = 9092
    cache_dir: Path = DEFAULT_CACHE_DIR
    version: str = KAFKA_VERSION
    heap: str = "512m"
    log_level: str = "WARN"
    #: A SASL_PLAINTEXT listener (mechanism PLAIN) on this port too, for ``sasl_users``
    #: (user -> password): the set-up of a managed Kafka, on loopback.
    sasl_port: int | None = None
    sasl_users: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def start(self, timeout: float = 90.0) -> str:
        """Fetch (if needed), format (if new), start and wait until metadata answers."""
        status = self.status()
        if status.running:
            if not status.answering:
                self._wait_until_answering(status.pid, timeout)
            return self.bootstrap
        java = require_tool(
            "java", "install a Java 17+ runtime (Debian: apt-get install default-jre)"
        )
        if not port_is_free(self.port):
            raise DevBrokerError(
                f"port {self.port} on 127.0.0.1 is taken: stop what uses it "
                "or choose another port (--port / QANAT_DEV_BROKER_PORT)"
            )
        libs = fetch_kafka_libs(self.version, self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_config()
        classpath = f"{libs}/*"
        if not (self.data_dir / "kraft" / "meta.properties").exists():
            self._format(java, classpath, properties)
        command = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_file.write_text(str(self._process.pid))
        try:
            self._wait_until_answering(self._process.pid, timeout)
        except DevBrokerError:
            self.stop()
            raise
        return self.bootstrap

    def _controller_port(self) -> int:
        # The controller's address is written into the formatted quorum, so it is kept.
        stored = self.data_dir / "controller.port"
        if stored.exists():
            return int(stored.read_text())
        port = free_port()
        stored.write_text(str(port))
        return port

    def _write_config(self) -> Path:
        controller = f"127.0.0.1:{self._controller_port()}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        if self.sasl_port is not None:
            settings |= self._sasl_settings(settings)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.data_dir / "log4j2.yaml").write_text(_LOG4J2.format(level=self.log_level))
        return path

    def _sasl_settings(self, settings: dict[str, str]) -> dict[str, str]:
        sasl = f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
        users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
        return {
            "listeners": f"{settings['listeners']},{sasl}",
            "advertised.listeners": f"{settings['advertised.listeners']},{sasl}",
            "listener.security.protocol.map": settings["listener.security.protocol.map"]
            + ",SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            ),
        }

    def _format(self, java: str, classpath: str, properties: Path) -> None:
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(properties),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise DevBrokerError(
                f"formatting the KRaft store failed: {detail[-1] if detail else ''}"
            )

    def _wait_until_answering(self, pid: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is not None and not process_alive(pid):
                raise DevBrokerError(
                    f"the broker exited during start-up; last lines of "
                    f"{self.log_file}: {self._log_tail()}"
                )
            if metadata_answers(self.bootstrap, 2.0):
                return
            time.sleep(0.3)
        raise DevBrokerError(
            f"the broker did not answer on {self.bootstrap} within "
            f"{timeout:.0f}s; see {self.log_file}"
        )

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def recorded_port(self) -> int | None:
        """The port this data directory's broker was last configured with (None: never)."""
        try:
            lines = (self.data_dir / "server.properties").read_text().splitlines()
        except OSError:
            return None
        prefix = "advertised.listeners=PLAINTEXT://"
        for line in lines:
            if line.startswith(prefix):
                return int(line.removeprefix(prefix).split(",")[0].rsplit(":", 1)[1])
        return None

    def _read_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        answering = pid is not None and metadata_answers(self.bootstrap, 2.0)
        return BrokerStatus(pid is not None, pid, self.bootstrap, answering)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait for a clean shutdown, SIGKILL only past ``timeout``."""
        pid = self._read_pid()
        if pid is None and self._process is not None and self._process.poll() is None:
            pid = self._process.pid  # stopped (Ctrl-C) before its pid file was written
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            self._reap(pid)
            time.sleep(0.1)
        if process_alive(pid):
            logger.warning("broker %s did not stop within %.0fs; killing it", pid, timeout)
            os.kill(pid, signal.SIGKILL)
            self._reap(pid, block=True)
        self._pid_file.unlink(missing_ok=True)
        self._forget_child()
        return True

    def _forget_child(self) -> None:
        """Reap the process this object started (it may be a launcher of the pid stopped):
        a second stop must not find it still exiting and count it as running."""
        if self._process is None:
            return
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _reap(self, pid: int, block: bool = False) -> None:
        if self._process is not None and self._process.pid == pid:
            if block:
                self._process.wait()
            else:
                self._process.poll()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited but was not reaped yet is a zombie: not alive.
    try:
        with Path(f"/proc/{pid}/stat").open() as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _cluster_id() -> str:
    """A Kafka-style base64url UUID; like Kafka's own, never starting with '-' (a CLI flag)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def metadata_answers(bootstrap: str, timeout: float) -> bool:
    """True when a broker at ``bootstrap`` returns cluster metadata within ``timeout``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "logger": logging.getLogger("qanat.devbroker.probe"),
        }
    )
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False
