"""What the transform keeps per vertical/type (a lane: names, record-key prefix, counts),
and the bounded set of reason codes its dead letters are counted by.

>>> lane = Lane("shop", "product")
>>> lane.count_invalid("schema"); lane.invalid, lane.key_prefix
(1, 'shop/product/')
"""

from __future__ import annotations

from typing import Any

from pipelines.core.metrics import EVENTS, INVALID
from pipelines.core.topics import record_key

METRICS_STAGE = "transform"
UNKNOWN = "-"
"""The vertical and type label of events whose headers name none (or a bad one)."""

# The reason label of qanat_invalid_events, by stage: a small, bounded set.
REASON_CODES = {
    "parse": (
        "missing_headers",
        "invalid_header",
        "empty",
        "too_large",
        "invalid_utf8",
        "not_json",
        "too_deep",
    ),
    "validate": ("schema", "no_schema"),
    "normalize": (
        "not_object",
        "missing_name",
        "name_too_long",
        "invalid_source_id",
        "invalid_vertical_data",
        "bad_event_time",
        "not_serializable",
        "record_too_large",
        "internal",
    ),
}


def header_text(value: Any) -> str:
    """A header value as text (bytes are UTF-8; a bad byte becomes U+FFFD)."""
    try:
        return str(value.decode("utf-8", "replace"))
    except AttributeError:
        return "" if value is None else str(value)


class Lane:
    """What every event of one vertical/type reuses: its names, its record-key prefix and
    its counts. The counts are plain ints, added to the Prometheus counters whenever
    they are read (:func:`pipelines.core.metrics.flush_tallies`): a labelled counter's
    locked increment per event would cost more than the rest of the bookkeeping."""

    __slots__ = (
        "_events",
        "_sent",
        "invalid",
        "key_prefix",
        "reasons",
        "type",
        "valid",
        "vertical",
    )

    def __init__(self, vertical: str, type_: str) -> None:
        self.vertical, self.type = vertical, type_
        self.key_prefix = record_key(vertical, type_, "")
        labels = {"stage": METRICS_STAGE, "vertical": vertical, "type": type_}
        self._events = (
            EVENTS.labels(outcome="valid", **labels),
            EVENTS.labels(outcome="invalid", **labels),
        )
        self.valid = self.invalid = 0
        self.reasons: dict[str, int] = {}
        self._sent: dict[str, int] = {}  # what flush added so far, by reason or outcome

    def count_invalid(self, code: str) -> None:
        self.invalid += 1
        self.reasons[code] = self.reasons.get(code, 0) + 1

    def flush(self) -> None:
        """Add the counts since the last flush to the counters (under the tally lock)."""
        valid, invalid = self._events
        pending: list[tuple[Any, str, int]] = [
            (valid, "\0valid", self.valid),
            (invalid, "\0invalid", self.invalid),
        ]
        pending += [(None, code, total) for code, total in list(self.reasons.items())]
        for child, slot, total in pending:
            delta = total - self._sent.get(slot, 0)
            if not delta:
                continue
            if child is None:  # a reason code: looked up here, at most once per read
                child = INVALID.labels(
                    stage=METRICS_STAGE, vertical=self.vertical, type=self.type, reason=slot
                )
            child.inc(delta)
            self._sent[slot] = total
