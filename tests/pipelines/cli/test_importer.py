"""``qanat import`` against the real broker: its progress display (a rich bar of bytes and
records when stderr is a terminal, plain lines when it is not), and Ctrl-C midway: exit
130 with the checkpoint saved, never a traceback, and a re-run resumes where it stopped
(and says where) until every record is in Kafka once."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.cli.importer import MB
from pipelines.core.config import KafkaSettings
from tests.kafka_helpers import consume
from tests.sources.files.test_stop import READ_AHEAD, write_records

pytestmark = pytest.mark.integration

ROWS = 5_000


def _command(path: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli.main", "import", str(path)]


def _env(kafka: KafkaSettings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    return env | {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_DATA_DIR": str(data_dir),
        "COLUMNS": "160",
    }


def _csv(path: Path) -> Path:
    path.write_text("id,title\n" + "".join(f"p{n},Product {n}\n" for n in range(ROWS)), "utf-8")
    return path


def _read_terminal(fd: int, process: subprocess.Popen[bytes]) -> bytes:
    """Everything written to the pseudo-terminal until the process ends."""
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed
                break
            output += chunk
        elif process.poll() is not None:
            break
    return output


def test_a_rich_bar_on_a_terminal_and_plain_lines_otherwise(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "products.csv")
    args = ["--vertical", "shop", "--type", "product", "--map", "source_id=id"]
    env = _env(kafka, tmp_path / "data")

    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [*_command(path), *args, "--restart"],
            env=env | {"TERM": "xterm"},
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        shown = _read_terminal(controller, process).decode(errors="replace")
        stdout, _ = process.communicate(timeout=30)
    finally:
        os.close(controller)
    assert process.returncode == 0, shown[-2000:]
    assert len(stdout.splitlines()) == 1, "stdout holds the report alone"
    assert orjson.loads(stdout)["produced"] == ROWS
    assert "importing" in shown and f"{ROWS:,} records" in shown
    assert "\x1b[" in shown, "drawn with terminal control sequences"

    piped = subprocess.run(
        [*_command(path), *args, "--restart"], env=env, capture_output=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr.decode()[-2000:]
    lines = piped.stderr.decode().splitlines()
    assert lines[-1].startswith("qanat import: read ")
    assert lines[-1].endswith(f"{ROWS:,} records published")
    assert "\x1b[" not in piped.stderr.decode()


BIG_ROWS = 200_000
INTERRUPT_AFTER_S = (0.0, 0.05, 0.15, 0.3)  # after the run's first checkpoint
SMALL_QUEUE = '{"queue.buffering.max.messages": "20"}'  # so the queue-full wait is hit


def _checkpoint(state: Path) -> dict[str, Any] | None:
    for path in state.glob("*.json"):
        try:
            saved: dict[str, Any] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):  # being replaced
            continue
        return saved
    return None


def _wait_for_a_checkpoint_past(state: Path, number: int, process: subprocess.Popen[bytes]) -> None:
    """Until the running import checkpoints past record ``number``: it is midway."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        saved = _checkpoint(state)
        if saved is not None and saved["number"] > number:
            return
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint past record {number} within 120 s")


def _resuming_line(saved: dict[str, Any], size: int) -> str:
    offset = saved["offset"]
    return (
        f"qanat import: resuming at {offset / MB:,.1f} of {size / MB:,.1f} MB "
        f"({100 * offset / size:.0f}%), {saved['produced']:,} records published"
    )


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_ctrl_c_midway_saves_the_checkpoint_exits_130_and_a_rerun_resumes(
    kafka: KafkaSettings, tmp_path: Path, fmt: str
) -> None:
    """SIGINT at four points of four runs (two with a producer queue of 20 records, so it
    lands in the queue-full wait too); it used to land inside confluent-kafka's header
    conversion now and then, a TypeError with exit status 1 and no checkpoint."""
    path = tmp_path / f"big.{fmt}"
    ends = write_records(path, fmt, BIG_ROWS)
    size = path.stat().st_size
    env = _env(kafka, tmp_path / "data")
    state = tmp_path / "data" / "imports"
    args = ["--vertical", "shop", "--type", "product", "--progress", "plain"]
    args += ["--checkpoint-every", "2000", *(["--map", "source_id=id"] if fmt == "csv" else [])]

    saved: dict[str, Any] | None = None
    for run, delay in enumerate(INTERRUPT_AFTER_S):
        queue = {"QANAT_KAFKA_CLIENT_CONFIG": SMALL_QUEUE} if run % 2 else {}
        process = subprocess.Popen(
            [*_command(path), *args],
            env=env | queue,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for_a_checkpoint_past(state, saved["number"] if saved else 0, process)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr_bytes = process.communicate(timeout=120)
        stderr = stderr_bytes.decode()
        assert process.returncode == 130, stderr[-3000:]
        assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
        assert stderr.splitlines()[-1] == (
            "qanat import: interrupted; run the same command to resume"
        )
        assert stdout == b"", "no report for an import that did not finish"
        if saved is not None:
            assert _resuming_line(saved, size) in stderr.splitlines()
        previous, saved = saved, _checkpoint(state)
        assert saved is not None and saved["number"] < BIG_ROWS, "interrupted midway"
        assert saved["number"] > (previous["number"] if previous else 0)
        assert saved["produced"] == saved["number"], "every record before it was produced"
        exact = ends[saved["number"] - 1]
        assert exact <= saved["offset"] <= exact + READ_AHEAD, "the reader's byte offset"

    assert saved is not None
    finished = subprocess.run(
        [*_command(path), *args], env=env, capture_output=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    assert _resuming_line(saved, size) in finished.stderr.decode().splitlines()
    report = orjson.loads(finished.stdout)
    assert report["completed"] and report["resumed_after"] == saved["number"]
    assert report["produced"] == BIG_ROWS
    assert report["ingestion_id"] == saved["ingestion_id"]
    assert _checkpoint(state) is None, "removed once complete"

    landed = consume(kafka, kafka.topics.raw, expected=BIG_ROWS, timeout=120)
    keys = Counter(message.key for message in landed)
    assert len(landed) == BIG_ROWS, f"{len(landed) - BIG_ROWS} records resent or lost"
    assert keys == {f"shop/product/r{n}".encode(): 1 for n in range(BIG_ROWS)}
