"""Results of the reliability scenarios, and ``RELIABILITY.md`` rendered from them.

Every scenario run appends one JSON line to ``<results dir>/runs.jsonl`` (the directory is
``QANAT_RELIABILITY_RESULTS``, default ``.qanat/reliability``); :func:`render` sums them
per scenario into the Markdown table of ``RELIABILITY.md``. The pytest session renders it
when a scenario ran (tests/conftest.py); so does ``.venv/bin/python -m
tests.reliability.report``. Either writes :func:`report_path`: a report outside git's
tracking (``$QANAT_REPORT_DIR/RELIABILITY.md``, default ``.qanat/reports/``), and the
tracked ``RELIABILITY.md`` at the repository root only with ``QANAT_WRITE_RELIABILITY=1``.
The report is merged into the one already there (:func:`merge`): the scenarios rendered
replace their rows, the other rows are kept.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "RELIABILITY.md"
#: The scenarios this process recorded a run of: the rows its test session renders.
RECORDED: set[str] = set()


def results_dir() -> Path:
    return Path(os.environ.get("QANAT_RELIABILITY_RESULTS", ROOT / ".qanat" / "reliability"))


def report_path() -> Path:
    """The tracked ``RELIABILITY.md`` with ``QANAT_WRITE_RELIABILITY=1``; else
    ``RELIABILITY.md`` in ``QANAT_REPORT_DIR`` (default ``.qanat/reports``, which git
    ignores), so that a test run leaves the tracked tree alone."""
    if os.environ.get("QANAT_WRITE_RELIABILITY") == "1":
        return REPORT
    return Path(os.environ.get("QANAT_REPORT_DIR") or ROOT / ".qanat" / "reports") / REPORT.name


@dataclass
class ScenarioResult:
    """One run of one scenario. ``sent`` counts distinct records (id, version) the client
    had to deliver; ``accepted`` counts the records acknowledged to it (in 202-answered
    requests for HTTP, retries of a batch that was not answered 202 counting once; a PUBACK
    for MQTT; Kafka's acknowledgement for records produced straight to Kafka).
    ``component`` names what was down for ``outage_s`` seconds (Kafka, PostgreSQL,
    Mosquitto); ``acked_in_outage`` counts acknowledgements given while it was down."""

    scenario: str
    sent: int
    accepted: int
    stored: int
    lost: int
    duplicated: int
    server_errors: int
    ids: int = 0
    extra: int = 0
    requests: int = 0
    kills: int = 0
    broker_restarts: int = 0
    outage_s: float = 0.0
    component: str = ""
    acked_in_outage: int = 0
    #: Events the pipeline kept as dead letters (the hostile-event run; 0 elsewhere).
    dead_lettered: int = 0
    unexpected: list[str] = field(default_factory=list)
    #: Services that exited by themselves (not killed) and were restarted by the harness.
    crashes: list[str] = field(default_factory=list)
    checksum_expected: str = ""
    checksum_stored: str = ""
    seed: int | None = None
    seconds: float = 0.0
    finished: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.extra == 0
            and self.duplicated == 0
            and self.acked_in_outage == 0
            and not self.unexpected
            and self.checksum_expected == self.checksum_stored
        )


def record_result(result: ScenarioResult) -> Path:
    """Append ``result`` to the runs file; its path."""
    import datetime

    result.finished = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    RECORDED.add(result.scenario)
    path = results_dir() / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        out.write(orjson.dumps(asdict(result)) + b"\n")
    return path


def load_runs(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or results_dir() / "runs.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


COLUMNS = (
    ("runs", "runs"),
    ("records sent", "sent"),
    ("accepted", "accepted"),
    ("stored", "stored"),
    ("dead-lettered", "dead_lettered"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("5xx", "server_errors"),
    ("kill -9", "kills"),
    ("crashes", "crashes"),
    ("broker restarts", "broker_restarts"),
    ("down (s)", "outage_s"),
    ("acked while down", "acked_in_outage"),
)


def upgraded(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` as recorded today. A run recorded before ``component`` existed with an
    outage is a chaos run's Kafka outage, whose kill and restart of the broker was not
    counted among its broker restarts then."""
    if "component" in run or not run.get("outage_s"):
        return run
    return run | {"component": "Kafka", "broker_restarts": run.get("broker_restarts", 0) + 1}


def render(runs: list[dict[str, Any]]) -> str:
    """The Markdown report: one row per scenario, summed over its runs."""
    totals: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, Any]] = {}
    down: dict[str, dict[str, None]] = {}  # scenario -> components, in order of appearance
    for run in map(upgraded, runs):
        row = totals.setdefault(run["scenario"], {key: 0 for _, key in COLUMNS})
        row["runs"] += 1
        for _, key in COLUMNS[1:]:
            value = run.get(key, 0) or 0
            row[key] += len(value) if isinstance(value, list) else value
        last[run["scenario"]] = run
        down.setdefault(run["scenario"], {})[run.get("component", "")] = None
    titles = [title for title, _ in COLUMNS]
    titles.insert(len(titles) - 2, "down")
    header = "| scenario | " + " | ".join(titles) + " | last run |"
    lines = [
        "# Reliability report",
        "",
        "Generated by the reliability suite (`tests/reliability/`, see README.md, "
        '"Reliability"); each row sums every recorded run of a scenario. *stored* counts the '
        "rows the store holds at the end (one per id: the latest acknowledged version); "
        "*accepted* the records acknowledged to their sender (an HTTP 202, an MQTT PUBACK, "
        "Kafka's acknowledgement); "
        "*dead-lettered* the events kept in the DLQ with their reason; "
        "*lost* counts ids whose latest acknowledged version is not in the store, "
        "*duplicated* rows beyond one per id; *5xx* the answers a client retried; "
        "*crashes* the times a service exited by itself "
        "(not killed) and the harness restarted it, as `qanat up` would; *down* the "
        "component that was down for *down (s)* seconds, and *acked while down* the "
        "acknowledgements given meanwhile that the component could not back (must be 0).",
        "",
        header,
        "|" + "---|" * (len(titles) + 2),
    ]
    for scenario, row in totals.items():
        run = last[scenario]
        cells = [f"{row[key]:g}" for _, key in COLUMNS]
        cells.insert(len(cells) - 2, ", ".join(c for c in down[scenario] if c) or "-")
        when = run.get("finished", "")
        if run.get("seed") is not None:
            when += f", seed {run['seed']}"
        if run.get("seconds"):
            when += f", {run['seconds']} s"
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {when} |")
    return "\n".join(lines) + "\n"


def _table(report: str) -> tuple[list[str], dict[str, list[str]]]:
    """The column titles of ``report``'s table and its rows' cells, by scenario."""
    titles: list[str] = []
    rows: dict[str, list[str]] = {}
    for line in report.splitlines():
        if not line.startswith("| "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not titles:
            titles = cells
        else:
            rows[cells[0]] = cells
    return titles, rows


def merge(rendered: str, existing: str) -> str:
    """``rendered`` with the rows of ``existing`` whose scenario it has no row of: a
    scenario that ran replaces its own row, in its place; the others are kept (their cells
    moved under the same column titles, blank under a column they did not have); a new
    scenario comes last."""
    titles, new_rows = _table(rendered)
    old_titles, old_rows = _table(existing)
    if not old_rows:
        return rendered
    merged = []
    for scenario, cells in old_rows.items():
        if scenario in new_rows:
            merged.append(new_rows.pop(scenario))
        else:
            by_title = dict(zip(old_titles, cells, strict=False))
            merged.append([by_title.get(title, "") for title in titles])
    merged.extend(new_rows.values())
    lines = rendered.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    table = ["| " + " | ".join(cells) + " |" for cells in merged]
    return "\n".join(lines[: first + 1] + table) + "\n"


def write_report(path: Path | None = None, scenarios: set[str] | None = None) -> Path:
    """Render the recorded runs of ``scenarios`` (default: every scenario recorded) into
    ``path`` (default :func:`report_path`), merged into the report there; where there is
    none yet, into the tracked ``RELIABILITY.md``. Returns ``path``."""
    path = path or report_path()
    runs = load_runs()
    if scenarios is not None:
        runs = [run for run in runs if run["scenario"] in scenarios]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Test processes run side by side (pytest-xdist) merge one at a time: none loses a row.
    # The lock lives under .qanat (ignored), also when the report is the tracked one.
    lock_path = ROOT / ".qanat" / "report.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = path if path.exists() else REPORT
        existing = base.read_text() if base.exists() else ""
        path.write_text(merge(render(runs), existing))
    return path
