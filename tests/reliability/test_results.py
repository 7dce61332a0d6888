"""RELIABILITY.md's table: runs summed per scenario, the component each outage took down,
and runs recorded before the ``component`` field existed (the chaos runs' Kafka outages,
their broker restart not counted then)."""

from __future__ import annotations

from dataclasses import asdict

from tests.reliability.results import ScenarioResult, render


def _row(report: str, scenario: str) -> list[str]:
    for line in report.splitlines():
        if line.startswith(f"| {scenario} |"):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row {scenario!r} in\n{report}")


def test_rows_sum_runs_and_name_what_was_down() -> None:
    old_chaos = asdict(ScenarioResult("chaos (CI)", 480, 480, 120, 0, 0, 2, outage_s=10.0))
    del old_chaos["component"]  # as recorded before the field existed
    runs = [
        old_chaos,
        asdict(ScenarioResult("chaos (CI)", 480, 480, 120, 0, 0, 3, outage_s=30.0)),  # 0 restarts
        asdict(ScenarioResult("PostgreSQL down 60 s", 3450, 3450, 2500, 0, 0, 0, seconds=70.5)),
        asdict(ScenarioResult("bad inputs", 37, 15, 15, 0, 0, 0)),
    ]
    runs[1]["component"], runs[2]["outage_s"], runs[2]["component"] = "Kafka", 60.1, "PostgreSQL"
    report = render(runs)

    header = _row(report, "scenario")
    chaos = dict(zip(header, _row(report, "chaos (CI)"), strict=True))
    assert chaos["runs"] == "2" and chaos["records sent"] == "960" and chaos["5xx"] == "5"
    assert chaos["down"] == "Kafka" and chaos["down (s)"] == "40"
    assert chaos["broker restarts"] == "1"  # the old run's outage restart, counted now
    postgres = dict(zip(header, _row(report, "PostgreSQL down 60 s"), strict=True))
    assert postgres["down"] == "PostgreSQL" and postgres["down (s)"] == "60.1"
    assert postgres["acked while down"] == "0" and postgres["last run"] == ", 70.5 s"
    assert dict(zip(header, _row(report, "bad inputs"), strict=True))["down"] == "-"
