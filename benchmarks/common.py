"""What every benchmark shares: its context, its result, and how results are written.

A result compares the measured ``value`` with a ``baseline`` measured in the same run, on
the same broker and data, so the ``ratio`` means something on any machine.

>>> r = BenchResult("demo", "2026-01-01T00:00:00Z", "abc", "records/s", 50.0,
...                 "passthrough", 100.0, 0.5, "ratio >= 0.5")
>>> target_met(r.ratio, r.target)
True
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RERUN = ".venv/bin/python -m benchmarks.run [names...] [--records N] [--repeats R]"
BOOTSTRAP_ENV = "QANAT_BENCH_KAFKA_BOOTSTRAP"

_TARGET = re.compile(r"^\s*(ratio|value)\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+)\s*([^\s0-9].*)?$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class BenchContext:
    """Where and how big: the broker every benchmark of one run shares, and its sizes."""

    bootstrap: str
    records: int | None  # None: each benchmark's own default
    repeats: int
    work_dir: Path
    broker: str  # how the broker was obtained, for the details


@dataclass(frozen=True)
class BenchResult:
    """One benchmark's outcome; its fields are exactly the keys of the result JSON."""

    name: str
    date: str
    commit: str
    metric: str
    value: float
    baseline: str
    baseline_value: float
    ratio: float
    target: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "date": self.date,
            "commit": self.commit,
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "target": self.target,
            "details": self.details,
        }


@dataclass(frozen=True)
class Benchmark:
    """One runnable benchmark, as listed by ``python -m benchmarks.run --list``."""

    name: str
    description: str
    run: Callable[[BenchContext], BenchResult]


def utc_now() -> str:
    """RFC 3339 UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str, root: Path = ROOT) -> str | None:
    """stdout of ``git args`` in the repository, or None when git cannot answer."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_commit(root: Path = ROOT) -> str:
    """``git rev-parse HEAD`` of the repository, or ``unknown``."""
    return _git("rev-parse", "HEAD", root=root) or "unknown"


def git_dirty(root: Path = ROOT) -> bool | None:
    """Whether tracked files other than the benchmark results differ from HEAD (None when
    git cannot tell): a run of several benchmarks writes results between them."""
    results = (f":(exclude){path.relative_to(ROOT)}" for path in (RESULTS_DIR, RESULTS_MD))
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *results, root=root)
    return None if status is None else bool(status)


def environment() -> dict[str, Any]:
    """The machine facts that explain a number: Python, CPUs, platform."""
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def make_result(
    name: str,
    metric: str,
    value: float,
    baseline: str,
    baseline_value: float,
    target: str | None,
    details: dict[str, Any] | None = None,
) -> BenchResult:
    """A result stamped with the date and commit; ratio = value / baseline_value."""
    ratio = value / baseline_value if baseline_value else float("nan")
    return BenchResult(
        name=name,
        date=utc_now(),
        commit=git_commit(),
        metric=metric,
        value=round(value, 3),
        baseline=baseline,
        baseline_value=round(baseline_value, 3),
        ratio=round(ratio, 4),
        target=target,
        details=details or {},
    )


def target_met(ratio: float, target: str | None, value: float | None = None) -> bool | None:
    """Whether the result meets a target written ``ratio >= X`` (or ``<=``, ``<``, ``>``),
    or ``value < X <unit>`` on the measured ``value`` (the unit is the metric's); None
    when there is no target, or it is not of that form.

    >>> target_met(0.1, "value < 100 MB", 98.6), target_met(0.1, "value < 100 MB", 101.0)
    (True, False)
    """
    if target is None:
        return None
    match = _TARGET.match(target)
    if match is None:
        return None
    subject, operator, bound = match.group(1), match.group(2), float(match.group(3))
    measured = ratio if subject == "ratio" else value
    if measured is None:
        return None
    return _COMPARE[operator](measured, bound)


def write_result(result: BenchResult, results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result.name}.json"
    path.write_bytes(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return path


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every ``*.json`` result in ``results_dir``, sorted by name."""
    results: list[dict[str, Any]] = []
    for path in sorted(results_dir.glob("*.json")):
        loaded = orjson.loads(path.read_bytes())
        if isinstance(loaded, dict):
            results.append(loaded)
    return sorted(results, key=lambda r: str(r.get("name", "")))


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _met(result: dict[str, Any]) -> str:
    ratio = result.get("ratio")
    if not isinstance(ratio, int | float):
        return ""
    value = result.get("value")
    measured = float(value) if isinstance(value, int | float) else None
    met = target_met(float(ratio), result.get("target"), measured)
    return "" if met is None else ("yes" if met else "**no**")


COLUMNS = (
    "Benchmark",
    "Metric",
    "Value",
    "Baseline",
    "Baseline value",
    "Ratio",
    "Target",
    "Met",
    "Date",
    "Commit",
)


def rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            str(r.get("name", "")),
            str(r.get("metric", "")),
            _number(r.get("value")),
            str(r.get("baseline", "")),
            _number(r.get("baseline_value")),
            _number(r.get("ratio")),
            str(r.get("target") or "-"),
            _met(r),
            str(r.get("date", "")),
            str(r.get("commit", ""))[:12],
        )
        for r in results
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    results: list[dict[str, Any]], source: str = "`benchmarks/results/*.json`"
) -> str:
    """RESULTS.md: one table row per benchmark (read from ``source``), how to re-run them."""
    lines = [
        "# Benchmark results",
        "",
        "Each benchmark measures qanat against a baseline in the same run, on the same broker",
        "and data; the ratio (value / baseline value) is what to compare across machines.",
        f"Generated by `benchmarks/run.py` from {source}; do not edit.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows(results)]
    lines += [
        "",
        f"Re-run: `{RERUN}` (starts the local Apache Kafka broker, or uses "
        f"`{BOOTSTRAP_ENV}` when set).",
        "",
    ]
    return "\n".join(lines)


def render_table(results: list[dict[str, Any]]) -> str:
    """The same table for a terminal, columns padded."""
    columns = ("Benchmark", "Metric", "Value", "Baseline value", "Ratio", "Target", "Met")
    picked = [(r[0], r[1], r[2], r[4], r[5], r[6], r[7].strip("*")) for r in rows(results)]
    widths = [
        max(len(c), *(len(row[i]) for row in picked)) if picked else len(c)
        for i, c in enumerate(columns)
    ]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in picked]
    return "\n".join(out)


def markdown_path(results_dir: Path = RESULTS_DIR) -> Path:
    """Where the ``RESULTS.md`` of ``results_dir`` goes: inside it (``--results-dir``),
    but the repository's own results keep theirs at ``benchmarks/RESULTS.md``.

    >>> markdown_path(Path("/tmp/run-7")), markdown_path() == RESULTS_MD
    (PosixPath('/tmp/run-7/RESULTS.md'), True)
    """
    if results_dir.resolve() == RESULTS_DIR.resolve():
        return RESULTS_MD
    return results_dir / RESULTS_MD.name


def write_markdown(results_dir: Path = RESULTS_DIR) -> Path:
    """Regenerate ``RESULTS.md`` (at :func:`markdown_path`) from every result in
    ``results_dir``; its path."""
    path = markdown_path(results_dir)
    own = path == RESULTS_MD
    source = "`benchmarks/results/*.json`" if own else "the `*.json` files beside it"
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(load_results(results_dir), source), encoding="utf-8")
    return path
