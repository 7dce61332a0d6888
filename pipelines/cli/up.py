"""``qanat up``: the whole local pipeline, one child process per service, supervised.

It starts the local broker (unless ``QANAT_KAFKA_BOOTSTRAP_SERVERS`` names one) and, when
Mosquitto is installed (and ``QANAT_MQTT_URL`` names no broker), a Mosquitto of its own,
both with their files under ``QANAT_DATA_DIR``; then it runs each service as ``qanat ...``
in a child process, prefixes every line a child prints with its name, restarts a child
that crashes (with backoff), and on Ctrl-C or SIGTERM (at any point, start-up included)
stops every child, then Mosquitto and the broker.

No port is fixed, so that a second ``qanat up`` (another ``QANAT_DATA_DIR``) and the test
suite run beside it: the broker keeps its data directory's last port (the first time 9092,
when free), the HTTP source takes 8080 when free, and each Kafka-consuming service's ops
port (``/healthz``, ``/readyz``, ``/metrics`` on 127.0.0.1) and Mosquitto's are free ports;
else a free port. A port asked for (``--broker-port``, ``--http-port`` or their variables)
must be free. Every address is printed at start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from pipelines.core.errors import FatalError
from pipelines.core.ops import DEFAULT_PORTS
from pipelines.core.ports import free_port, port_is_free
from pipelines.devbroker import LocalBroker
from pipelines.devmqtt import LocalMosquitto, mosquitto_binary

COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m")
RESET = "\033[0m"
MAX_BACKOFF_S = 30.0
DEFAULT_BROKER_PORT = 9092
DEFAULT_HTTP_PORT = 8080
READY_TIMEOUT_S = 60.0


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
    def ops_url(self) -> str | None:
        port = self.env.get("QANAT_OPS_PORT")
        return f"http://127.0.0.1:{port}" if port and port != "0" else None

    @property
    def ready_url(self) -> str | None:
        return f"{self.ops_url}/readyz" if self.ops_url else None


@dataclass
class Supervisor:
    services: list[Service]
    env: dict[str, str]
    stopping: threading.Event = field(default_factory=threading.Event)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, service: Service) -> None:
        command = [sys.executable, "-m", "pipelines.cli.main", *service.args]
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
                    self._move_ops_port_if_taken(service)
                    self.start(service)

    def _move_ops_port_if_taken(self, service: Service) -> None:
        """Its ops port was free at start-up; if something took it since, another one."""
        port = service.env.get("QANAT_OPS_PORT")
        if service.ops_url and port and not port_is_free(int(port)):
            service.env["QANAT_OPS_PORT"] = str(free_port())
            self.say(f"{service.name}: ops port {port} is taken now; it moves to {service.ops_url}")

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
            say(message)


def say(message: str) -> None:
    print(f"{'qanat':>12} | {message}", flush=True)


def wait_for_http(url: str, timeout: float, stop: threading.Event | None = None) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` (False at once when ``stop`` is set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:  # refused, or a 503 (HTTPError): not yet
            time.sleep(0.3)
    return False


def choose_port(
    asked: int | None,
    preferred: Iterable[int | None],
    host: str = "127.0.0.1",
    *,
    what: str,
    option: str,
) -> int:
    """The port asked for, which must be free; else the first free ``preferred`` one; else
    a free port."""
    if asked:
        if not port_is_free(asked, host):
            raise FatalError(
                f"{what}: port {asked} on {host} is taken: stop what uses it, choose another "
                f"({option}) or leave it unset for a free one"
            )
        return asked
    for port in preferred:
        if port and port_is_free(port, host):
            return port
    return free_port(host)


def local_broker(directory: Path, asked: int | None) -> LocalBroker:
    """The local broker of ``directory``, on the port it had (if still free), else on 9092
    (if free), else on a free port; ``asked`` must be free."""
    recorded = LocalBroker(directory).recorded_port()
    if recorded is not None:
        running = LocalBroker(directory, port=recorded)
        if running.status().running:  # left by `qanat dev broker start` or a killed qanat up
            if asked and asked != recorded:
                raise FatalError(
                    f"the broker of {directory} runs on port {recorded} already: stop it "
                    f"(qanat dev broker stop --port {recorded}) or ask for that port"
                )
            return running
    port = choose_port(
        asked,
        [recorded, DEFAULT_BROKER_PORT],
        what="Apache Kafka",
        option="--broker-port / QANAT_DEV_BROKER_PORT",
    )
    return LocalBroker(directory, port=port)


def local_services(env: dict[str, str], mqtt: bool) -> list[Service]:
    """The children; each Kafka-consuming one gets a free ops port of its own (one
    ``QANAT_OPS_PORT`` for all could serve only one; ``QANAT_OPS_PORT=0`` disables them)."""
    services = [
        Service("source-http", ["source", "http"]),
        Service("transform", ["transform"]),
        Service("sink-sqlite", ["sink", "sqlite"]),
        Service("sink-errors", ["sink", "errors", "sqlite"]),
    ]
    if mqtt:
        services.append(Service("source-mqtt", ["source", "mqtt"]))
    taken: set[int] = set()
    for index, service in enumerate(services):
        service.colour = COLOURS[index % len(COLOURS)]
        if service.name in DEFAULT_PORTS and env.get("QANAT_OPS_PORT") != "0":
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            service.env |= {"QANAT_OPS_PORT": str(port), "QANAT_OPS_HOST": "127.0.0.1"}
    return services


class _Interrupted(BaseException):
    """Ctrl-C or SIGTERM while the brokers start: unwinds to the clean-up."""


@dataclass
class _StopSignal:
    """The SIGINT/SIGTERM handler: sets ``event``; while ``interrupt``, also unwinds."""

    event: threading.Event = field(default_factory=threading.Event)
    interrupt: bool = True

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            return  # stopping already
        self.event.set()
        if self.interrupt:
            raise _Interrupted


def run_local_pipeline(
    data_dir: Path,
    broker_port: int | None,
    http_host: str,
    http_port: int | None,
    sqlite_path: Path,
    schema_dir: Path,
) -> int:
    """Run broker, Mosquitto (when installed), HTTP source, transform, SQLite sink, errors
    sink and MQTT source until interrupted. ``None``: no port asked for (see the module)."""
    env = dict(os.environ)
    stop = _StopSignal()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    broker: LocalBroker | None = None
    mosquitto: LocalMosquitto | None = None
    supervisor: Supervisor | None = None
    try:
        option = "--http-port / QANAT_HTTP_PORT"
        what = "the HTTP source"
        port = choose_port(http_port, [DEFAULT_HTTP_PORT], http_host, what=what, option=option)
        if "QANAT_KAFKA_BOOTSTRAP_SERVERS" not in env:
            broker = local_broker(data_dir / "broker", broker_port)
            say(f"starting Apache Kafka on {broker.bootstrap} (log: {broker.log_file})")
            env["QANAT_KAFKA_BOOTSTRAP_SERVERS"] = broker.start()
        else:
            say(f"Kafka at {env['QANAT_KAFKA_BOOTSTRAP_SERVERS']} (QANAT_KAFKA_BOOTSTRAP_SERVERS)")
        if env.get("QANAT_MQTT_URL"):
            say(f"MQTT broker at {env['QANAT_MQTT_URL']} (QANAT_MQTT_URL)")
        elif mosquitto_binary() is not None:
            mosquitto = LocalMosquitto(data_dir / "mosquitto")
            env["QANAT_MQTT_URL"] = mosquitto.start()
            say(f"Mosquitto on {env['QANAT_MQTT_URL']} (files in {mosquitto.directory})")
        else:
            say("no MQTT source: Mosquitto is not installed (Debian: apt-get install mosquitto)")
        env.update(
            {
                "QANAT_DATA_DIR": str(data_dir),
                "QANAT_HTTP_HOST": http_host,
                "QANAT_HTTP_PORT": str(port),
                "QANAT_HTTP_AUTH": env.get("QANAT_HTTP_AUTH", "none"),  # development: no keys
                "QANAT_SQLITE_PATH": str(sqlite_path),
                "QANAT_TRANSFORM_SCHEMA_DIR": str(schema_dir),
            }
        )
        services = local_services(env, mqtt=bool(env.get("QANAT_MQTT_URL")))
        supervisor = Supervisor(services, env, stopping=stop.event)
        stop.interrupt = False  # from here on the supervisor's loops watch the event
        base = f"http://{http_host}:{port}"
        moved = "" if http_port or port == DEFAULT_HTTP_PORT else f"; {DEFAULT_HTTP_PORT} is taken"
        say(f"source-http on {base} (the ingest API, /healthz /readyz /metrics{moved})")
        for service in services:
            if service.ops_url:
                say(f"{service.name}: /healthz /readyz /metrics on {service.ops_url}")
        for service in services:
            if not stop.event.is_set():
                supervisor.start(service)
        _announce_ready(supervisor, base, sqlite_path)
        supervisor.watch()
    except _Interrupted:
        pass
    finally:
        stop.interrupt = False
        stop.event.set()  # a second Ctrl-C does not cut the clean-up short
        if broker or mosquitto or supervisor:
            say("stopping")
        if supervisor is not None:
            supervisor.stop()
        if mosquitto is not None:
            mosquitto.stop()
        if broker is not None:
            broker.stop()
    return 0


def _announce_ready(supervisor: Supervisor, base: str, sqlite_path: Path) -> None:
    stop = supervisor.stopping
    if not wait_for_http(f"{base}/healthz", READY_TIMEOUT_S, stop):
        if not stop.is_set():
            supervisor.say(f"source-http does not answer on {base} (see its lines above)")
        return
    for service in supervisor.services:
        if service.ready_url is None:
            continue
        if wait_for_http(service.ready_url, READY_TIMEOUT_S, stop):
            supervisor.say(f"{service.name}: ready ({service.ready_url}, /metrics)")
        elif not stop.is_set():
            supervisor.say(f"{service.name}: not ready yet ({service.ready_url} says why)")
    if not stop.is_set():
        supervisor.say(f"ready. POST records to {base}/api/v1/ingest/<vertical>/<type>/batch")
        supervisor.say(
            f"rows land in SQLite at {sqlite_path} "
            "(see them with: qanat records ls); Ctrl-C stops everything"
        )
