"""Fixtures of the reliability suite: one chaos run per session on a Kafka broker of its
own (it is killed and restarted; the shared broker is never touched), in CI or long mode
(``QANAT_CHAOS``). A scenario that ran sets ``config._qanat_reliability_ran``, and
tests/conftest.py renders RELIABILITY.md at the end of the session."""

from __future__ import annotations

import os

import pytest

from tests.reliability.chaos import ChaosPlan, ChaosRun, own_broker
from tests.reliability.results import ScenarioResult, record_result

LONG = os.environ.get("QANAT_CHAOS", "ci") == "long"


def chaos_plan() -> ChaosPlan:
    if LONG:
        plan = ChaosPlan(ids=2000, versions=6, batch=50, kills=20, pace_s=0.3, outage_s=30.0)
        plan.converge_timeout_s = 300.0
    else:  # the broker's one restart is the outage's: killed, down 30 s, started again
        plan = ChaosPlan(ids=120, versions=4, batch=24, kills=5, broker_restart=False)
        # ~20 s of load for 6 events at least 2 s apart: the outage falls within the load,
        # so the client's own batches meet it (and wait through it), not only the probes.
        plan.pace_s, plan.outage_s = 1.0, 30.0
    if os.environ.get("QANAT_CHAOS_SEED"):
        plan.seed = int(os.environ["QANAT_CHAOS_SEED"])
    return plan


@pytest.fixture(scope="session")
def chaos_result(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScenarioResult:
    work = tmp_path_factory.mktemp("chaos")
    scenario = "chaos (long)" if LONG else "chaos (CI)"
    with own_broker(work) as broker:
        result = ChaosRun(chaos_plan(), broker, work / "run", scenario).run()
    record_result(result)
    request.config._qanat_reliability_ran = True  # type: ignore[attr-defined]
    return result
