"""``qanat up``: the whole local pipeline, one child process per service, supervised.

It starts the local broker (unless ``QANAT_KAFKA_BOOTSTRAP_SERVERS`` names one), then
runs each service as ``qanat ...`` in a child process, prefixes every line a child prints
with its name, restarts a child that crashes (with backoff), and on Ctrl-C or SIGTERM
stops every child and the broker it started. Each Kafka-consuming service serves
``/healthz``, ``/readyz`` and ``/metrics`` on 127.0.0.1 at its default ops port (another
free port when that one is taken); ``qanat up`` says where once every service is ready.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from pipelines.devbroker import LocalBroker, free_port, port_is_free
from pipelines.ops import DEFAULT_PORTS

COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m")
RESET = "\033[0m"
MAX_BACKOFF_S = 30.0


@dataclass
class Service:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    colour: str = ""
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's

    @property
    def ready_url(self) -> str | None:
        port = self.env.get("QANAT_OPS_PORT")
        return f"http://127.0.0.1:{port}/readyz" if port else None


@dataclass
class Supervisor:
    services: list[Service]
    env: dict[str, str]
    stopping: threading.Event = field(default_factory=threading.Event)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, service: Service) -> None:
        command = [sys.executable, "-m", "pipelines.cli", *service.args]
        service.process = subprocess.Popen(
            command,
            env=self.env | service.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert service.process.stdout is not None
        threading.Thread(
            target=self._relay, args=(service, service.process.stdout), daemon=True
        ).start()

    def _relay(self, service: Service, stream: IO[bytes]) -> None:
        tty = sys.stdout.isatty()
        prefix = f"{service.colour}{service.name:>12}{RESET} | " if tty else f"{service.name} | "
        for line in iter(stream.readline, b""):
            with self._print_lock:
                sys.stdout.write(prefix + line.decode("utf-8", errors="replace"))
                sys.stdout.flush()

    def watch(self) -> None:
        """Restart crashed children with exponential backoff until asked to stop."""
        while not self.stopping.wait(0.5):
            for service in self.services:
                if service.process is None or service.process.poll() is None:
                    continue
                now = time.monotonic()
                if service.next_start == 0.0:
                    delay = min(MAX_BACKOFF_S, 2.0**service.restarts)
                    self.say(
                        f"{service.name} exited with {service.process.returncode}; "
                        f"restarting in {delay:.0f}s"
                    )
                    service.next_start = now + delay
                elif now >= service.next_start:
                    service.restarts += 1
                    service.next_start = 0.0
                    self.start(service)

    def stop(self, timeout: float = 20.0) -> None:
        self.stopping.set()
        running = [s.process for s in self.services if s.process and s.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def say(self, message: str) -> None:
        with self._print_lock:
            print(f"{'qanat':>12} | {message}", flush=True)


def wait_for_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:
            time.sleep(0.3)
    return False


def mqtt_available(env: dict[str, str]) -> bool:
    """Whether ``qanat up`` runs the MQTT source: QANAT_MQTT_URL names a broker, or one
    answers on 127.0.0.1:1883 (scripts/up.sh starts Mosquitto there when installed)."""
    if env.get("QANAT_MQTT_URL"):
        return True
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=0.5).close()
    except OSError:
        return False
    return True


def run_local_pipeline(
    data_dir: Path,
    broker_port: int,
    http_host: str,
    http_port: int,
    sqlite_path: Path,
    schema_dir: Path,
) -> int:
    """Run broker, HTTP source, transform, SQLite sink and errors sink until interrupted."""
    env = dict(os.environ)
    broker: LocalBroker | None = None
    if "QANAT_KAFKA_BOOTSTRAP_SERVERS" not in env:
        broker = LocalBroker(data_dir / "broker", port=broker_port)
        print(
            f"{'qanat':>12} | starting Apache Kafka on 127.0.0.1:{broker_port} "
            f"(log: {broker.log_file})",
            flush=True,
        )
        env["QANAT_KAFKA_BOOTSTRAP_SERVERS"] = broker.start()
    env.update(
        {
            "QANAT_DATA_DIR": str(data_dir),
            "QANAT_HTTP_HOST": http_host,
            "QANAT_HTTP_PORT": str(http_port),
            "QANAT_HTTP_AUTH": env.get("QANAT_HTTP_AUTH", "none"),  # development: no API keys
            "QANAT_SQLITE_PATH": str(sqlite_path),
            "QANAT_TRANSFORM_SCHEMA_DIR": str(schema_dir),
        }
    )
    services = [
        Service("source-http", ["source", "http"]),
        Service("transform", ["transform"]),
        Service("sink-sqlite", ["sink", "sqlite"]),
        Service("sink-errors", ["sink", "errors", "sqlite"]),
    ]
    if mqtt_available(env):
        services.append(Service("source-mqtt", ["source", "mqtt"]))
    for index, service in enumerate(services):
        service.colour = COLOURS[index % len(COLOURS)]
        # one port per child (a QANAT_OPS_PORT for all could serve only one); 0 disables
        if service.name in DEFAULT_PORTS and env.get("QANAT_OPS_PORT") != "0":
            port = DEFAULT_PORTS[service.name]
            port = port if port_is_free(port) else free_port()
            service.env |= {"QANAT_OPS_PORT": str(port), "QANAT_OPS_HOST": "127.0.0.1"}
    supervisor = Supervisor(services, env)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for service in services:
            supervisor.start(service)
        base = f"http://{http_host}:{http_port}"
        if wait_for_http(f"{base}/healthz", 60):
            for service in services:
                if service.ready_url and wait_for_http(service.ready_url, 60):
                    supervisor.say(f"{service.name}: ready ({service.ready_url}, /metrics)")
            supervisor.say(f"ready. POST records to {base}/api/v1/ingest/<vertical>/<type>/batch")
            supervisor.say(
                f"rows land in SQLite at {sqlite_path} "
                "(see them with: qanat records ls); Ctrl-C stops everything"
            )
        supervisor.watch()
    finally:
        supervisor.say("stopping")
        supervisor.stop()
        if broker is not None:
            broker.stop()
    return 0
