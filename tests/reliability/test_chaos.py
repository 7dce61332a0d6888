"""kill -9 chaos: the HTTP source, the transform and the SQLite sink are killed and
restarted at random (seeded) points of a versioned load, and the broker goes down once;
the store ends with exactly the latest acknowledged version of every id.

CI mode (default): 5 kills and the broker killed, kept down 30 s and restarted (the run
the Kafka-outage test checks too), a small load. ``QANAT_CHAOS=long``: 20 kills, a
``kill -9`` restart of the broker and a 30 s outage, a bigger load (or
``.venv/bin/python -m tests.reliability.chaos --kills 20 --outage 30``).
``QANAT_CHAOS_SEED`` repeats a run.
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
