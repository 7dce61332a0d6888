"""Kafka down: while the broker cannot take writes the HTTP source answers 503 (never 202);
once it is back the pipeline recovers by itself and nothing a 202 acknowledged is lost.

The broker of the chaos run (test_chaos.py, the same session-wide run) is killed and kept
down 30 s (in CI mode and with ``QANAT_CHAOS=long``) in the middle of the load, then
started again; its client retries every batch until it gets a 202, and every request that
started while the broker was down and ended before it was back must have been refused.
The report counts that kill and restart as a broker restart.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import LONG
from tests.reliability.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_kafka_outage_is_503_never_202_and_loses_nothing(chaos_result: ScenarioResult) -> None:
    result = chaos_result
    assert result.outage_s == 30.0 and result.component == "Kafka"
    assert result.broker_restarts == (2 if LONG else 1)  # long mode: a kill -9 restart too
    assert result.acked_in_outage == 0, "a request got a 202 while Kafka was down"
    assert result.server_errors > 0, "no 503 while Kafka was down"
    assert result.lost == 0 and result.checksum_stored == result.checksum_expected, result
