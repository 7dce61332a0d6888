"""The Prometheus metrics every qanat service exports, defined once.

Each service is its own process, so the default registry holds exactly that service's
metrics; ``pipelines.core.ops`` serves them on ``/metrics``. Label values stay bounded:
``reason`` is a short code (``not_json``, ``schema``, ...), never free text, and vertical
and type, which a client names (any write key may try a new name on every request), keep
the first :data:`MAX_LABEL_VALUES` values seen in this process; every later one is
counted under :data:`OTHER`.

>>> from pipelines.core.metrics import EVENTS
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


HTTP_DISCONNECTS = Counter(
    "qanat_http_client_disconnects",
    "HTTP requests whose client hung up before the service had read the request "
    "(mid-body) or before it answered.",
)
HTTP_TIMEOUTS = Counter(
    "qanat_http_timeouts",
    "HTTP connections cut off by the server, by phase: headers (not complete in time), "
    "body (no bytes for too long), refused (over the connection bound).",
    ["phase"],
)

#: Most distinct values of one client-named label (vertical, type) kept per process.
MAX_LABEL_VALUES = 200
#: The label value every value beyond :data:`MAX_LABEL_VALUES` is counted under.
OTHER = "other"
_SEEN: dict[str, set[str]] = {"vertical": set(), "type": set()}
_SEEN_LOCK = threading.Lock()


def bounded_label(name: str, value: str) -> str:
    """``value``, or :data:`OTHER` once ``name`` has :data:`MAX_LABEL_VALUES` others.

    >>> bounded_label("vertical", "shop")
    'shop'
    """
    seen = _SEEN[name]
    if value in seen:
        return value
    with _SEEN_LOCK:
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(value)
    return value


def count(stage: str, outcome: str, vertical: str, type_: str, n: int = 1) -> None:
    """Add ``n`` events of one outcome (a shorthand for the labelled counter)."""
    vertical, type_ = bounded_label("vertical", vertical), bounded_label("type", type_)
    EVENTS.labels(stage=stage, outcome=outcome, vertical=vertical, type=type_).inc(n)


def count_invalid(stage: str, vertical: str, type_: str, reason: str, n: int = 1) -> None:
    """Add ``n`` dead-lettered events with their reason code.

    Callers count the outcome itself (``invalid`` or ``dead_lettered``) with ``count``.
    """
    vertical, type_ = bounded_label("vertical", vertical), bounded_label("type", type_)
    INVALID.labels(stage=stage, vertical=vertical, type=type_, reason=reason).inc(n)
