"""``qanat import``'s progress display against the real broker: a rich bar (bytes and
records) when stderr is a terminal, plain lines when it is not."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipelines.config import KafkaSettings

pytestmark = pytest.mark.integration

ROWS = 5_000


def _command(path: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "import", str(path)]


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
