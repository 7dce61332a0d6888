"""``qanat up``, as the quick start uses it: its own broker, a POST, the row in SQLite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from pipelines.devbroker import LocalBroker, free_port
from sinks.errors_sqlite import SQLiteErrorStore
from sinks.sqlite import SQLiteSinkSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _qanat(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_quick_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    broker_port, http_port = free_port(), free_port()
    env |= {"QANAT_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "QANAT_LOG_FORMAT": "json"}
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
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
