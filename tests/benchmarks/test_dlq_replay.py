"""``python -m benchmarks.run dlq_replay --results-dir DIR`` against the real broker: each
repeat's DLQ state topic is new, so a replay right after it was created (which failed with
``_UNKNOWN_PARTITION`` on a fresh broker) must work; its RESULTS.md lands inside DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from benchmarks.common import BOOTSTRAP_ENV, ROOT

pytestmark = pytest.mark.integration


def test_a_small_run_writes_its_result_and_results_md_inside_the_results_dir(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    command = [sys.executable, "-m", "benchmarks.run", "dlq_replay", "--records", "2000"]
    command += ["--repeats", "2", "--results-dir", str(results)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env | {BOOTSTRAP_ENV: kafka_bootstrap},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results"], "nothing beside it"
    assert sorted(path.name for path in results.iterdir()) == ["RESULTS.md", "dlq_replay.json"]
    result = orjson.loads((results / "dlq_replay.json").read_bytes())
    assert result["details"]["replay_summary"]["replayed"] == 2000
    assert "| dlq_replay |" in (results / "RESULTS.md").read_text()
