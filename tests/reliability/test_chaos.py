"""kill -9 chaos: the HTTP source, the transform and the SQLite sink are killed and
restarted at random (seeded) points of a versioned load, and the broker goes down once;
the store ends with exactly the latest acknowledged version of every id.

CI mode (default): 5 kills and the broker killed, kept down 30 s and restarted (the run
the Kafka-outage test checks too), a small load. ``QANAT_CHAOS=long``: 20 kills, a
``kill -9`` restart of the broker and a 30 s outage, a bigger load (or
``.venv/bin/python -m tests.reliability.chaos --kills 20 --outage 30``).
``QANAT_CHAOS_SEED`` repeats a run.

Kafka down, in the same run: while the broker cannot take writes the HTTP source answers
503 (never 202); once it is back the pipeline recovers by itself and nothing a 202
acknowledged is lost. The client retries every batch until it gets a 202, and every request
that started while the broker was down and ended before it was back must have been
refused. The report counts that kill and restart as a broker restart. Both tests share the
session's one chaos run, so they live in one file (pytest-xdist's ``--dist loadfile`` keeps
them on one worker, and the run happens once).
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import LONG
from tests.reliability.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_kill_9_anywhere_loses_nothing_and_duplicates_nothing(
    chaos_result: ScenarioResult,
) -> None:
    result = chaos_result
    assert result.kills >= (20 if LONG else 5)
    assert not result.unexpected, result.unexpected
    assert result.lost == 0 and result.extra == 0 and result.duplicated == 0, (
        f"seed {result.seed}: {result}"
    )
    assert result.stored == result.ids and result.accepted >= result.sent
    assert result.checksum_stored == result.checksum_expected, f"seed {result.seed}"


def test_kafka_outage_is_503_never_202_and_loses_nothing(chaos_result: ScenarioResult) -> None:
    result = chaos_result
    assert result.outage_s == 30.0 and result.component == "Kafka"
    assert result.broker_restarts == (2 if LONG else 1)  # long mode: a kill -9 restart too
    assert result.acked_in_outage == 0, "a request got a 202 while Kafka was down"
    assert result.server_errors > 0, "no 503 while Kafka was down"
    assert result.lost == 0 and result.checksum_stored == result.checksum_expected, result
