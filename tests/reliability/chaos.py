"""Chaos runs: a versioned load through the real HTTP source while services are killed.

A pipeline of real processes (HTTP source, transform, SQLite sink) runs on a broker of its
own (:class:`pipelines.devbroker.LocalBroker` on a free port; the shared broker is never
touched). A client posts every id in several versions, with increasing event times, and
retries each batch until it gets a 202, as a real client does; it remembers which
versions were acknowledged. Meanwhile, at seeded random points of the load, one of the
services gets ``kill -9`` and is restarted, and the broker is restarted once (or, for the
outage scenario, stopped for a while: then no request may get a 202). At the end the
store must hold exactly the latest acknowledged version of every id.

Run the long mode from the repository root::

    .venv/bin/python -m tests.reliability.chaos --kills 20 --ids 2000 --versions 8
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import ensure_topics
from pipelines.devbroker import LocalBroker, free_port
from pipelines.devbroker_jars import DevBrokerError
from tests.reliability.results import ScenarioResult, record_result
from tests.services import Services

ROOT = Path(__file__).resolve().parents[2]
# A killed consumer's partitions move on after its session times out: the broker's
# minimum (6 s) instead of librdkafka's 45 s keeps a run short.
FAST_FAILOVER = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}
COMMANDS = {
    "source-http": ("source", "http"),
    "transform": ("transform",),
    "sink-sqlite": ("sink", "sqlite"),
}
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
VERTICAL, TYPE = "chaos", "thing"


@dataclass
class ChaosPlan:
    """What one run does; ``seed`` makes its kill points and victims repeatable."""

    ids: int = 200
    versions: int = 4
    batch: int = 25
    kills: int = 5
    broker_restart: bool = True
    outage_s: float = 0.0
    pace_s: float = 0.15
    min_gap_s: float = 2.0
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(1 << 32))
    converge_timeout_s: float = 90.0

    def batches(self) -> list[list[dict[str, object]]]:
        """Every version of every id, version by version, in batches."""
        out: list[list[dict[str, object]]] = []
        for version in range(1, self.versions + 1):
            stamp = (BASE_TIME + timedelta(minutes=version)).isoformat().replace("+00:00", "Z")
            records = [
                {"name": f"e{n} v{version}", "source_id": f"e{n}", "version": version}
                | {"event_time": stamp}
                for n in range(self.ids)
            ]
            out += [records[i : i + self.batch] for i in range(0, len(records), self.batch)]
        return out


class Client(threading.Thread):
    """Posts each batch until it gets a 202; remembers what was acknowledged."""

    def __init__(self, url: str, batches: list[list[dict[str, object]]], pace_s: float) -> None:
        super().__init__(daemon=True, name="chaos-client")
        self.url, self.batches, self.pace_s = url, batches, pace_s
        self.sent_batches = 0  # acknowledged batches so far: the load's progress
        self.requests = self.server_errors = self.refused = 0
        self.accepted: dict[str, int] = {}  # source_id -> latest acknowledged version
        self.accepted_records = 0
        self.outage: tuple[float, float] | None = None  # (start, end) monotonic
        self.acked_in_outage: list[float] = []
        self.probe_answers: list[int] = []  # the controller's own requests during the outage
        self.unexpected: list[str] = []
        self.failed: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=15.0) as client:
                for records in self.batches:
                    self._post_until_accepted(client, records)
                    self.sent_batches += 1
                    time.sleep(self.pace_s)
        except BaseException as exc:  # reported by the controller
            self.failed = exc

    def _post_until_accepted(self, client: httpx.Client, records: list[dict[str, object]]) -> None:
        while True:
            started = time.monotonic()
            self.requests += 1
            try:
                response = client.post(self.url, json={"records": records})
            except httpx.HTTPError:
                time.sleep(0.2)  # the source is down or restarting: try again
                continue
            if response.status_code == 202:
                self._note_ack(started, records)
                return
            if response.status_code >= 500:
                self.server_errors += 1
            elif response.status_code == 429:
                self.refused += 1
            else:
                self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                return
            time.sleep(0.2)

    def _note_ack(self, started: float, records: list[dict[str, object]]) -> None:
        outage = self.outage
        if outage is not None and outage[0] <= started and time.monotonic() <= outage[1]:
            self.acked_in_outage.append(started)
        for record in records:
            source_id, version = str(record["source_id"]), int(str(record["version"]))
            self.accepted[source_id] = max(version, self.accepted.get(source_id, 0))
        self.accepted_records += len(records)


def stored_versions(db: Path) -> list[tuple[str, int]]:
    """(source_id, version) of every stored row of the chaos vertical."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            rows = conn.execute(
                "SELECT source_id, json_extract(data, '$.version') FROM records "
                "WHERE vertical = ? AND type = ?",
                (VERTICAL, TYPE),
            ).fetchall()
    except sqlite3.OperationalError:  # the sink has not created the table yet
        return []
    return [(str(source_id), int(version)) for source_id, version in rows]


def checksum(pairs: object) -> str:
    lines = sorted(f"{source_id}\t{version}" for source_id, version in pairs)  # type: ignore[attr-defined]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass
class ChaosRun:
    """One run of a plan on a broker of its own; ``run`` returns its result."""

    plan: ChaosPlan
    broker: LocalBroker
    work: Path
    scenario: str = "chaos"
    log: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    restarted: dict[str, float] = field(default_factory=dict)
    broker_restarts: int = 0  # the kill -9 restart and the outage's kill and restart

    def say(self, message: str) -> None:
        line = f"[chaos {time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        print(line, flush=True)

    def run(self) -> ScenarioResult:
        self.say(f"scenario {self.scenario}: seed {self.plan.seed} ({self.plan})")
        rng = random.Random(self.plan.seed)
        with self._services() as services:
            http_port = int(services.env["QANAT_HTTP_PORT"])
            client = Client(
                f"http://127.0.0.1:{http_port}/api/v1/ingest/{VERTICAL}/{TYPE}/batch",
                self.plan.batches(),
                self.plan.pace_s,
            )
            started = time.monotonic()
            client.start()
            kills = self._disturb(services, client, rng)
            deadline = time.monotonic() + 900
            while client.is_alive() and time.monotonic() < deadline:
                self.supervise(services)
                client.join(0.2)
            if client.failed is not None:
                raise client.failed
            assert not client.is_alive(), "the client did not finish"
            stored = self._converge(services, client)
            result = self._result(client, stored, kills, time.monotonic() - started)
        self.say(f"result: {result}")
        return result

    @contextmanager
    def _services(self) -> Iterator[Services]:
        kafka = KafkaSettings(
            bootstrap_servers=self.broker.bootstrap,
            topic_prefix=f"c{uuid.uuid4().hex[:10]}",
            partitions=2,
            client_config=FAST_FAILOVER,
        )
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, 1)
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "QANAT_DATA_DIR": str(self.work / "data"),
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_KAFKA_PARTITIONS": "2",
            "QANAT_KAFKA_CLIENT_CONFIG": orjson.dumps(FAST_FAILOVER).decode(),
            "QANAT_HTTP_PORT": str(free_port()),
            "QANAT_HTTP_AUTH": "none",
            "QANAT_HTTP_DELIVERY_TIMEOUT_S": "5",
            "QANAT_SQLITE_PATH": str(self.db),
            "QANAT_TRANSFORM_SCHEMA_DIR": str(ROOT / "schemas"),
            "QANAT_OPS_PORT": "0",
        }
        services = Services(env, logs)
        try:
            for name, args in COMMANDS.items():
                services.start(name, *args)
            services.wait_http(f"http://127.0.0.1:{env['QANAT_HTTP_PORT']}/readyz")
            yield services
        finally:
            services.stop()

    @property
    def db(self) -> Path:
        return self.work / "qanat.db"

    def _disturb(self, services: Services, client: Client, rng: random.Random) -> int:
        """Kill and restart services (and the broker) at seeded points of the load."""
        total = len(client.batches)
        events = ["kill"] * self.plan.kills
        if self.plan.broker_restart:
            events.insert(rng.randrange(len(events) + 1), "broker")
        if self.plan.outage_s:
            events.insert(rng.randrange(len(events) + 1), "outage")
        points = sorted(rng.sample(range(1, max(total - 1, len(events) + 1)), len(events)))
        kills = 0
        for event, point in zip(events, points, strict=True):
            # At least min_gap_s apart: a kill should hit a service that is up again.
            earliest = time.monotonic() + self.plan.min_gap_s
            while (client.sent_batches < point and client.is_alive()) or (
                time.monotonic() < earliest
            ):
                self.supervise(services)
                time.sleep(0.05)
            if event == "kill":
                self._kill_one(services, rng.choice(sorted(COMMANDS)), rng)
                kills += 1
            elif event == "broker":
                self.say(f"kill -9 the broker at batch {client.sent_batches}/{total}; restart")
                kill_broker(self.broker)
                restart_broker(self.broker)
                self.broker_restarts += 1
            else:
                self._outage(services, client, total)
        return kills

    def supervise(self, services: Services) -> None:
        """Restart a service that exited by itself, as ``qanat up`` or an orchestrator would,
        with a short backoff; every such exit is counted as a crash and reported."""
        now = time.monotonic()
        for name, args in COMMANDS.items():
            process = services.processes.get(name)
            if process is None or process.poll() is None:
                continue
            if now - self.restarted.get(name, 0.0) < 2.0:
                continue
            self.crashes.append(f"{name} exited with {process.returncode}")
            self.say(f"{name} exited by itself with {process.returncode}: restarting it")
            self.restarted[name] = now
            services.start(name, *args)

    def _kill_one(self, services: Services, victim: str, rng: random.Random) -> None:
        process = services.processes.pop(victim)
        self.say(f"kill -9 {victim} (pid {process.pid})")
        process.kill()
        process.wait(30)
        time.sleep(rng.uniform(0.0, 1.0))
        services.start(victim, *COMMANDS[victim])
        if victim == "source-http":
            self._wait_ready(services)

    def _wait_ready(self, services: Services, timeout: float = 120.0) -> None:
        url = f"http://127.0.0.1:{services.env['QANAT_HTTP_PORT']}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise(services)
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout}s\n{services.log_tails()}")

    def _outage(self, services: Services, client: Client, total: int) -> None:
        self.say(f"Kafka down for {self.plan.outage_s:g}s at batch {client.sent_batches}/{total}")
        kill_broker(self.broker)
        # Any request that starts now, while no broker listens, must not get a 202.
        start = time.monotonic()
        client.outage = (start, start + self.plan.outage_s)
        # The load may be between batches (or done): probe with requests of our own, so the
        # outage is always exercised. A probe record never counts as accepted: were one
        # answered 202, it is counted in acked_in_outage and the test fails.
        # (another type, so that a probe stored after the outage is not in the checksum)
        probe = {"records": [{"name": "probe", "source_id": "outage-probe"}]}
        port = services.env["QANAT_HTTP_PORT"]
        url = f"http://127.0.0.1:{port}/api/v1/ingest/{VERTICAL}/probe/batch"
        while time.monotonic() < start + self.plan.outage_s:
            self.supervise(services)
            try:
                answer = httpx.post(url, json=probe, timeout=15.0).status_code
            except httpx.HTTPError:
                answer = 0  # the source is restarting
            client.probe_answers.append(answer)
            if answer == 202 and time.monotonic() <= start + self.plan.outage_s:
                client.acked_in_outage.append(start)
            time.sleep(0.1)
        client.outage = (start, time.monotonic())
        restart_broker(self.broker)
        self.broker_restarts += 1
        self.say("Kafka back")

    def _converge(self, services: Services, client: Client) -> list[tuple[str, int]]:
        expected = checksum(client.accepted.items())
        deadline = time.monotonic() + self.plan.converge_timeout_s
        stored = stored_versions(self.db)
        while checksum(stored) != expected and time.monotonic() < deadline:
            self.supervise(services)
            time.sleep(0.5)
            stored = stored_versions(self.db)
        return stored

    def _result(
        self, client: Client, stored: list[tuple[str, int]], kills: int, seconds: float
    ) -> ScenarioResult:
        by_id: dict[str, int] = {}
        for source_id, version in stored:
            by_id[source_id] = version
        lost = sum(1 for i, v in client.accepted.items() if by_id.get(i, 0) < v)
        extra = sum(1 for i, v in by_id.items() if v > client.accepted.get(i, 0))
        return ScenarioResult(
            scenario=self.scenario,
            sent=self.plan.ids * self.plan.versions,
            accepted=client.accepted_records,
            ids=len(client.accepted),
            stored=len(stored),
            lost=lost,
            extra=extra,
            duplicated=len(stored) - len(by_id),
            server_errors=client.server_errors + sum(a >= 500 for a in client.probe_answers),
            requests=client.requests,
            kills=kills,
            broker_restarts=self.broker_restarts,
            outage_s=self.plan.outage_s,
            component="Kafka" if self.plan.outage_s else "",
            acked_in_outage=len(client.acked_in_outage),
            unexpected=client.unexpected[:5],
            crashes=list(self.crashes),
            checksum_expected=checksum(client.accepted.items()),
            checksum_stored=checksum(stored),
            seed=self.plan.seed,
            seconds=round(seconds, 1),
        )


def kill_broker(broker: LocalBroker) -> None:
    """``kill -9`` the broker (its data stays: a restart recovers it)."""
    pid = broker.status().pid
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        while broker.status().running:
            time.sleep(0.1)


def restart_broker(broker: LocalBroker, attempts: int = 30) -> None:
    """Start the broker again on its port. Clients that keep reconnecting to a free port in
    the ephemeral range can briefly hold it themselves (a TCP self-connect): wait that out."""
    for _ in range(attempts - 1):
        try:
            broker.start()
            return
        except DevBrokerError as exc:
            if "is taken" not in str(exc):
                raise
            time.sleep(1.0)
    broker.start()


@contextmanager
def own_broker(work: Path) -> Iterator[LocalBroker]:
    """A broker of this run's own, on a free port; stopped afterwards."""
    broker = LocalBroker(work / "broker", port=free_port(), heap="384m")
    broker.start()
    try:
        yield broker
    finally:
        kill_broker(broker)  # its data is thrown away: no clean shutdown needed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ids", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between batches")
    parser.add_argument("--outage", type=float, default=0.0, help="a Kafka outage (s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--scenario", default="chaos (long)")
    args = parser.parse_args(argv)
    plan = ChaosPlan(
        ids=args.ids,
        versions=args.versions,
        batch=args.batch,
        kills=args.kills,
        pace_s=args.pace,
        outage_s=args.outage,
        converge_timeout_s=300.0,
    )
    if args.seed is not None:
        plan.seed = args.seed
    with tempfile.TemporaryDirectory(prefix="qanat-chaos-") as tmp, own_broker(Path(tmp)) as b:
        result = ChaosRun(plan, b, Path(tmp) / "run", args.scenario).run()
    record_result(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
