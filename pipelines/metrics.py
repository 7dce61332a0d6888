"""The Prometheus metrics every qanat service exports, defined once.

Each service is its own process, so the default registry holds exactly that service's
metrics; ``pipelines.ops`` serves them on ``/metrics``. Label values stay bounded:
vertical and type come from the user's configuration, ``reason`` is a short code
(``not_json``, ``schema``, ...), never free text.

>>> from pipelines.metrics import EVENTS
>>> EVENTS.labels(stage="transform", outcome="valid", vertical="shop", type="product").inc()
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram


class Tally(Protocol):
    """Counts kept as plain ints on a hot path, added to the counters by ``flush``."""

    def flush(self) -> None: ...


_TALLIES: set[Tally] = set()
_TALLY_LOCK = threading.Lock()


def add_tallies(tallies: Iterable[Tally]) -> None:
    """Have every read of the counters (``/metrics``, ``REGISTRY``) flush ``tallies`` first."""
    with _TALLY_LOCK:
        _TALLIES.update(tallies)


def retire_tallies(tallies: Iterable[Tally]) -> None:
    """Flush ``tallies`` one last time and stop following them."""
    with _TALLY_LOCK:
        for tally in tallies:
            tally.flush()
            _TALLIES.discard(tally)


def flush_tallies() -> None:
    """Add every pending count to its counter (a scrape does this first)."""
    with _TALLY_LOCK:
        for tally in _TALLIES:
            tally.flush()


class _TalliedCounter(Counter):
    """A Counter that flushes the pending tallies before it is read, so a scrape sees
    every event counted so far, though the hot path only adds to an int."""

    def collect(self) -> Any:
        flush_tallies()
        return super().collect()


EVENTS = _TalliedCounter(
    "qanat_events",
    "Events per stage and outcome (received, produced, valid, invalid, upserted, "
    "dead_lettered), per vertical and type.",
    ["stage", "outcome", "vertical", "type"],
)
INVALID = _TalliedCounter(
    "qanat_invalid_events",
    "Events dead-lettered, per stage, vertical, type and reason code.",
    ["stage", "vertical", "type", "reason"],
)
BATCH_SECONDS = Histogram(
    "qanat_batch_seconds",
    "Time to process one batch (a sink flush, a request, a replay chunk), per stage.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CONSUMER_LAG = Gauge(
    "qanat_consumer_lag",
    "Messages between a consumer group's committed offset and the partition's end.",
    ["group", "topic", "partition"],
)


def count(stage: str, outcome: str, vertical: str, type_: str, n: int = 1) -> None:
    """Add ``n`` events of one outcome (a shorthand for the labelled counter)."""
    EVENTS.labels(stage=stage, outcome=outcome, vertical=vertical, type=type_).inc(n)


def count_invalid(stage: str, vertical: str, type_: str, reason: str, n: int = 1) -> None:
    """Add ``n`` dead-lettered events with their reason code.

    Callers count the outcome itself (``invalid`` or ``dead_lettered``) with ``count``.
    """
    INVALID.labels(stage=stage, vertical=vertical, type=type_, reason=reason).inc(n)
