"""The reliability report is merged, not rewritten: a session that ran some scenarios
replaces their rows and keeps the others'; it goes outside git's tracking unless
``QANAT_WRITE_RELIABILITY=1`` asks for the tracked RELIABILITY.md."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.reliability import results
from tests.reliability.results import ScenarioResult, merge, render, write_report


def _table(report: str) -> list[list[str]]:
    """The header's cells, then each row's."""
    lines = [line for line in report.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def _rows(report: str) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in _table(report)[1:]}


def _run(scenario: str, sent: int) -> dict[str, object]:
    return asdict(ScenarioResult(scenario, sent, sent, sent, 0, 0, 0))


def test_a_scenario_that_ran_replaces_its_row_and_the_others_are_kept() -> None:
    existing = render([_run("chaos (CI)", 480), _run("bad inputs", 37), _run("PG down", 10)])
    rendered = render([_run("bad inputs", 52), _run("new one", 5)])
    merged = merge(rendered, existing)

    assert list(_rows(merged)) == ["chaos (CI)", "bad inputs", "PG down", "new one"]
    assert _rows(merged)["bad inputs"] == _rows(rendered)["bad inputs"]
    assert _rows(merged)["chaos (CI)"] == _rows(existing)["chaos (CI)"]
    assert merged.startswith(rendered.split("| scenario |")[0])  # the current preamble
    assert merge(rendered, "") == rendered
    assert merge(existing, existing) == existing


def test_a_kept_row_moves_under_its_column_titles() -> None:
    existing = "| scenario | runs | gone | lost |\n|---|---|---|---|\n| old | 3 | x | 0 |\n"
    header, old = _table(merge(render([]), existing))
    row = dict(zip(header, old, strict=True))
    assert row["scenario"] == "old" and row["runs"] == "3" and row["lost"] == "0"
    assert row["stored"] == "" and "x" not in row.values()


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs of two scenarios recorded in a results dir of the test's own, and a stand-in for
    the tracked RELIABILITY.md holding three rows."""
    monkeypatch.setenv("QANAT_RELIABILITY_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("QANAT_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("QANAT_WRITE_RELIABILITY", raising=False)
    monkeypatch.setattr(results, "RECORDED", set())
    tracked = tmp_path / "RELIABILITY.md"
    monkeypatch.setattr(results, "REPORT", tracked)
    tracked.write_text(render([_run("chaos (CI)", 480), _run("bad inputs", 37), _run("MQTT", 9)]))
    results.record_result(ScenarioResult("bad inputs", 52, 15, 15, 0, 0, 0))
    results.record_result(ScenarioResult("chaos (CI)", 1, 1, 1, 0, 0, 0))
    results.RECORDED.discard("chaos (CI)")  # recorded by an earlier session, not this one
    return tracked


def test_the_session_report_goes_outside_the_tracked_tree(recorded: Path, tmp_path: Path) -> None:
    before = recorded.read_text()
    path = write_report(scenarios=results.RECORDED)

    assert path == tmp_path / "reports" / "RELIABILITY.md"
    assert recorded.read_text() == before
    rows, old = _rows(path.read_text()), _rows(before)
    assert rows["bad inputs"][2] == "52"  # records sent: this session's run
    assert rows["chaos (CI)"] == old["chaos (CI)"] and rows["MQTT"] == old["MQTT"]
    # The next session merges into the report it wrote, not the tracked one.
    assert write_report(scenarios=set()) == path and _rows(path.read_text()) == rows


def test_qanat_write_reliability_regenerates_the_tracked_report(
    recorded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QANAT_WRITE_RELIABILITY", "1")
    assert write_report(scenarios=results.RECORDED) == recorded
    rows = _rows(recorded.read_text())
    assert list(rows) == ["chaos (CI)", "bad inputs", "MQTT"]
    assert rows["bad inputs"][2] == "52" and rows["chaos (CI)"][2] == "480"
    # Without scenarios (python -m tests.reliability.report): every recorded one.
    assert _rows(write_report().read_text())["chaos (CI)"][2] == "1"


def test_the_default_report_dir_is_ignored_by_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QANAT_REPORT_DIR", raising=False)
    monkeypatch.delenv("QANAT_WRITE_RELIABILITY", raising=False)
    if not shutil.which("git") or not (results.ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    path = results.report_path()
    assert path != results.REPORT
    ignored = subprocess.run(["git", "-C", str(results.ROOT), "check-ignore", "-q", str(path)])
    assert ignored.returncode == 0, f"{path} is not ignored by git"
