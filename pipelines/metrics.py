"""The Prometheus metrics every qanat service exports, defined once.

Each service is its own process, so the default registry holds exactly that service's
metrics; ``pipelines.ops`` serves them on ``/metrics``. Label values stay bounded:
vertical and type come from the user's configuration, ``reason`` is a short code
(``not_json``, ``schema``, ...), never free text.

>>> from pipelines.metrics import EVENTS
>>> EVENTS.labels(stage="transform", outcome="valid", vertical="shop", type="product").inc()
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "qanat_events",
    "Events per stage and outcome (received, produced, valid, invalid, upserted, "
    "dead_lettered), per vertical and type.",
    ["stage", "outcome", "vertical", "type"],
)
INVALID = Counter(
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
