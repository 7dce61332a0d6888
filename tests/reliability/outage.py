"""Helpers of the outage scenarios (test_mqtt_outage.py, tests/integration/
test_postgres_outage.py): waiting on a running pipeline, counting a topic (``end_offset``,
the benchmarks' own), and marking the session so that RELIABILITY.md is rendered at its end
(tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from benchmarks.transform_throughput import end_offset
from tests.reliability.results import ScenarioResult, record_result
from tests.services import Services

__all__ = ["end_offset", "report", "wait_for"]


def wait_for(
    what: str, check: Callable[[], bool], services: Services, timeout: float, every: float = 0.5
) -> float:
    """Seconds until ``check()``; fails if it takes longer or a service exits."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        services.check_alive()
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}\n{services.log_tails()}"
    )


def report(request: pytest.FixtureRequest, result: ScenarioResult) -> None:
    """Record ``result`` and have the session render RELIABILITY.md at its end."""
    record_result(result)
    request.config._qanat_reliability_ran = True  # type: ignore[attr-defined]
