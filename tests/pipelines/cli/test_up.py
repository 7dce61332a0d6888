"""``qanat up``, as the quick start uses it: its own broker, a POST, the row in SQLite;
two of them side by side; and Ctrl-C (SIGINT) or SIGTERM, even during start-up, leaves no
process of theirs and nothing listening on their ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from pipelines.core.ports import port_answers
from pipelines.devbroker import LocalBroker, free_port, process_alive
from pipelines.devmqtt import mosquitto_binary
from sinks.sqlite.errors import SQLiteErrorStore
from sinks.sqlite.sink import SQLiteSinkSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _qanat(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _up(data_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], Callable[[], str]]:
    """``qanat up`` with its own data directory and a clean environment; its output."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    env |= {"QANAT_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    log = data_dir / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli.main", "up", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, lambda: log.read_text(errors="replace")


def _wait_for(text: str, up: subprocess.Popen[bytes], output: Callable[[], str]) -> None:
    deadline = time.monotonic() + 240
    while text not in output():
        assert up.poll() is None, output()
        assert time.monotonic() < deadline, output()
        time.sleep(0.3)


def _processes_of(data_dir: Path) -> set[int]:
    """Live processes that name ``data_dir`` in their command line or environment."""
    needle = str(data_dir).encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            named = needle in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if named and process_alive(int(proc.name)):
            found.add(int(proc.name))
    return found


def _ports_printed(output: str) -> set[int]:
    return {int(port) for port in re.findall(r"qanat \| .*?127\.0\.0\.1:(\d+)", output)}


def _stop_and_check(up: subprocess.Popen[bytes], output: Callable[[], str], data_dir: Path) -> None:
    """SIGINT (Ctrl-C) to ``qanat up`` alone: it exits 0 and leaves nothing behind."""
    children = _processes_of(data_dir)
    assert len(children) >= 6, output()  # qanat up, the broker, its services
    up.send_signal(signal.SIGINT)
    up.wait(90)
    assert up.returncode == 0, output()
    assert not {pid for pid in children if process_alive(pid)}, output()
    assert not _processes_of(data_dir), output()
    answering = [port for port in _ports_printed(output()) if port_answers(port)]
    assert not answering, output()


def test_two_side_by_side_and_ctrl_c_stops_all(tmp_path: Path) -> None:
    """Two ``qanat up`` with their own data directories run at once; no port of theirs is
    fixed. A third that asks for a port the first took is refused at once."""
    ports = {name: (free_port(), free_port()) for name in ("a", "b")}
    ups = {
        name: _up(tmp_path / name, "--broker-port", str(broker), "--http-port", str(http))
        for name, (broker, http) in ports.items()
    }
    try:
        for up, output in ups.values():
            _wait_for("ready. POST records to", up, output)
        outputs = {name: output() for name, (_up_, output) in ups.items()}
        printed = {name: _ports_printed(text) for name, text in outputs.items()}
        assert not printed["a"] & printed["b"], outputs
        for name, text in outputs.items():
            assert "transform: ready (" in text and "sink-sqlite: ready (" in text, text
            assert f"source-http on http://127.0.0.1:{ports[name][1]} " in text, text
            if mosquitto_binary() is not None:  # its own Mosquitto, its files in the data dir
                mqtt = re.search(r"Mosquitto on mqtt://127\.0\.0\.1:(\d+)", text)
                assert mqtt and mqtt.group(1) != "1883", text
                assert "source-mqtt: ready (" in text, text
                files = tmp_path / name / "mosquitto"
                assert (files / "port").read_text() == mqtt.group(1)
                assert {"mosquitto.conf", "mosquitto.log", "mosquitto.pid"} <= {
                    path.name for path in files.iterdir()
                }
        third, third_output = _up(tmp_path / "c", "--http-port", str(ports["a"][1]))
        assert third.wait(60) == 1, third_output()
        assert f"port {ports['a'][1]} on 127.0.0.1 is taken" in third_output()
        assert not (tmp_path / "c" / "broker").exists()  # refused before starting anything
    finally:
        for name, (up, output) in ups.items():
            if up.poll() is None:
                _stop_and_check(up, output, tmp_path / name)
    assert not (tmp_path / "a" / "mosquitto" / "mosquitto.pid").exists()


def test_sigterm_during_start_up_stops_what_was_started(tmp_path: Path) -> None:
    up, output = _up(tmp_path, "--broker-port", str(free_port()), "--http-port", str(free_port()))
    pid_file = tmp_path / "broker" / "broker.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists():  # the broker's JVM is starting
        assert up.poll() is None and time.monotonic() < deadline, output()
        time.sleep(0.1)
    children = _processes_of(tmp_path)
    assert int(pid_file.read_text()) in children
    up.send_signal(signal.SIGTERM)
    up.wait(60)
    assert up.returncode == 0, output()
    assert "ready. POST" not in output() and "stopping" in output()
    assert not {pid for pid in children if process_alive(pid)}
    assert not _processes_of(tmp_path), output()


def test_quick_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    broker_port, http_port = free_port(), free_port()
    env |= {"QANAT_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "QANAT_LOG_FORMAT": "json"}
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli.main",
            "up",
            "--broker-port",
            str(broker_port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        output = lambda: (tmp_path / "up.log").read_text(errors="replace")  # noqa: E731
        deadline = time.monotonic() + 120
        while "ready. POST records to" not in output():
            assert up.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.3)
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/api/v1/ingest/shop/product/batch",
            json={
                "records": [
                    {"name": "Desk lamp", "source_id": "lamp-1", "price": 24.5},
                    {"name": "Broken", "source_id": "bad-1", "price": -3},
                ]
            },
        )
        assert response.status_code == 202, response.text
        rows: list[dict[str, object]] = []
        while not rows:
            assert time.monotonic() < deadline + 60, output()
            listed = _qanat("records", "ls", "--vertical", "shop", env=env)
            rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
            time.sleep(0.5)
        assert rows[0]["source_id"] == "lamp-1"
        assert rows[0]["vertical_data"] == {"price": 24.5}
        errors = SQLiteErrorStore(SQLiteSinkSettings(path=tmp_path / "qanat.db"))
        ingestion_id = response.json()["ingestion_id"]
        while errors.counts(ingestion_id)["invalid"] == 0:
            assert time.monotonic() < deadline + 60, output()
            time.sleep(0.5)
        assert errors.counts(ingestion_id)["by_stage"] == {"validate": 1}
        assert errors.errors(ingestion_id)[0]["reason"].startswith("schema validation failed")
        errors.close()
        for service in ("source-http |", "transform |", "sink-sqlite |", "sink-errors |"):
            assert service in output()
        # every service is ready on its ops port, with its metrics; logs are JSON lines
        ready = re.search(r"sink-sqlite: ready \((http://127\.0\.0\.1:\d+)/readyz", output())
        assert ready, output()
        metrics = httpx.get(f"{ready.group(1)}/metrics").text
        assert 'outcome="upserted"' in metrics
        assert "transform: ready (" in output() and "sink-errors: ready (" in output()
        logged = [
            orjson.loads(line.split(" | ", 1)[1])
            for line in output().splitlines()
            if line.startswith("transform | {")
        ]
        assert logged and all("level" in entry and "logger" in entry for entry in logged)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    assert up.returncode == 0, output()
    assert not LocalBroker(tmp_path / "broker", port=broker_port).status().running
