"""The dead-letter contract: what a stage adds to an event it rejects (design.md)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipelines.core.topics import (
    H_ERROR_AT,
    H_ERROR_DETAILS,
    H_ERROR_OFFSET,
    H_ERROR_PARTITION,
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_ERROR_TOPIC,
    H_ERROR_TRUNCATED,
    H_REPLAY_COUNT,
    H_REPLAY_LAST_ERROR,
    MESSAGE_OVERHEAD_BYTES,
    Headers,
)

STAGES = ("parse", "validate", "normalize", "sink")
_ERROR_HEADERS = frozenset(
    {
        H_REPLAY_COUNT,
        H_ERROR_AT,
        H_ERROR_DETAILS,
        H_ERROR_OFFSET,
        H_ERROR_PARTITION,
        H_ERROR_REASON,
        H_ERROR_STAGE,
        H_ERROR_TOPIC,
        H_ERROR_TRUNCATED,
    }
)
MAX_REASON_LENGTH = 500
MAX_DETAILS = 20  # errors listed in qanat.error.details; then a note of how many more
_STAGE_VALUES = {stage: stage.encode() for stage in STAGES}


class _ErrorClock:
    """``now()`` as header bytes at millisecond precision, the date and clock formatted once
    per second: a burst of dead letters (a bad batch) would otherwise spend more on the
    timestamp than on the rest of its headers.

    >>> len(_ErrorClock()()) == len(b"2026-01-01T00:00:00.000000Z")
    True
    """

    def __init__(self) -> None:
        self._millis = self._second = -1
        self._prefix = self._value = b""

    def __call__(self) -> bytes:
        millis = time.time_ns() // 1_000_000
        if millis == self._millis:
            return self._value
        second, fraction = divmod(millis, 1000)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._second, self._prefix = second, moment.isoformat()[:19].encode()
        self._millis, self._value = millis, b"%s.%03d000Z" % (self._prefix, fraction)
        return self._value


_error_at = _ErrorClock()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def dead_letter_headers(
    original: Iterable[tuple[str, Any]] | None,
    *,
    stage: str,
    reason: str,
    details: list[dict[str, Any]],
    topic: str,
    partition: int,
    offset: int,
) -> Headers:
    """The original headers (a previous error's replaced) plus this error's headers.

    ``details`` lists at most :data:`MAX_DETAILS` errors; when there are more, one more
    entry says how many were left out (``truncated``), so a record with thousands of
    errors still makes a dead letter of a sensible size.

    >>> h = dict(dead_letter_headers([("qanat.vertical", b"shop")], stage="parse",
    ...          reason="not JSON", details=[], topic="qanat.raw", partition=0, offset=7))
    >>> h["qanat.error.stage"], h["qanat.error.offset"], h["qanat.replay.count"]
    (b'parse', b'7', b'0')
    """
    stage_value = _STAGE_VALUES.get(stage)
    if stage_value is None:
        raise ValueError(f"unknown stage {stage!r}")
    headers: Headers = []
    replay_count = b"0"
    for name, value in original or ():
        if name not in _ERROR_HEADERS:
            headers.append((name, value if value.__class__ is bytes else _as_bytes(value)))
        elif name == H_REPLAY_COUNT:
            replay_count = _as_bytes(value)
    headers += (
        (H_ERROR_STAGE, stage_value),
        (H_ERROR_REASON, reason[:MAX_REASON_LENGTH].encode("utf-8", "replace")),
        (
            H_ERROR_DETAILS,
            orjson.dumps(capped_details(details) if len(details) > MAX_DETAILS else details),
        ),
        (H_ERROR_AT, _error_at()),
        (H_ERROR_TOPIC, topic.encode()),
        (H_ERROR_PARTITION, str(partition).encode()),
        (H_ERROR_OFFSET, str(offset).encode()),
        (H_REPLAY_COUNT, replay_count),
    )
    return headers


def message_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A message's size as a broker's ``max.message.bytes`` counts it, near enough: key,
    value, headers and :data:`~pipelines.core.topics.MESSAGE_OVERHEAD_BYTES` of framing."""
    size = MESSAGE_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
    for name, header in headers:
        size += len(name) + 8 + len(header or b"")
    return size


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, Headers]:
    """The value and headers of a dead letter that fits in ``limit`` bytes: unchanged when
    it fits; else the details are cut to a note and then the value is truncated, with
    ``qanat.error.truncated`` set to the original value's length (the headers, which say
    where the event came from and why it failed, are always kept).

    >>> headers = [("qanat.error.details", b"[]")]
    >>> value, out = fit_dead_letter(None, b"x" * 5000, headers, 2000)
    >>> len(value) < 2000, dict(out)["qanat.error.truncated"]
    (True, b'5000')
    """
    if message_size(key, value, headers) <= limit:
        return value, headers
    note = orjson.dumps([{"path": "$", "message": "details left out: the letter is too large"}])
    headers = [(n, note if n == H_ERROR_DETAILS else h) for n, h in headers]
    original = len(value or b"")
    headers.append((H_ERROR_TRUNCATED, str(original).encode()))
    room = limit - message_size(key, b"", headers)
    if room >= original:
        headers.pop()  # the details were the excess: the value is whole
        return value, headers
    return (value or b"")[: max(room, 0)], headers


def capped_details(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first :data:`MAX_DETAILS` errors, then ``{"path": "$", "message": "...",
    "truncated": n}`` for the ``n`` more, if any.

    >>> capped_details([{"path": f"$[{i}]", "message": "bad"} for i in range(22)])[-1]
    {'path': '$', 'message': '2 more error(s) not listed', 'truncated': 2}
    """
    if len(details) <= MAX_DETAILS:
        return details
    more = len(details) - MAX_DETAILS
    note = {"path": "$", "message": f"{more} more error(s) not listed", "truncated": more}
    return [*details[:MAX_DETAILS], note]


_REPLAY_DROPS = _ERROR_HEADERS | {H_REPLAY_COUNT, H_REPLAY_LAST_ERROR}


def replay_headers(original: Iterable[tuple[str, Any]] | None) -> tuple[Headers, int]:
    """The headers a dead letter is republished with to the raw topic, and its new replay
    count: the original headers without the error headers, ``qanat.replay.count`` plus one
    and the error it had in ``qanat.replay.last_error`` ("<stage>: <reason>").

    >>> h, n = replay_headers([("qanat.vertical", b"shop"), ("qanat.error.stage", b"parse"),
    ...     ("qanat.error.reason", b"not JSON"), ("qanat.replay.count", b"1")])
    >>> n, dict(h)["qanat.replay.last_error"], "qanat.error.stage" in dict(h)
    (2, b'parse: not JSON', False)
    """
    kept: Headers = []
    count = stage = reason = None
    for pair in original or ():  # one pass, no copies: this runs once per replayed event
        name = pair[0]
        if name not in _REPLAY_DROPS:
            kept.append(pair)
        elif name == H_REPLAY_COUNT:
            count = pair[1]
        elif name == H_ERROR_STAGE:
            stage = pair[1]
        elif name == H_ERROR_REASON:
            reason = pair[1]
    replays = replay_count(None if count is None else _as_bytes(count)) + 1
    kept.append((H_REPLAY_COUNT, str(replays).encode()))
    if stage is not None or reason is not None:
        error = _as_bytes(stage or b"") + b": " + _as_bytes(reason or b"")
        kept.append((H_REPLAY_LAST_ERROR, error[: MAX_REASON_LENGTH * 2]))
    return kept, replays


def replay_count(value: bytes | str | None) -> int:
    """A ``qanat.replay.count`` header value as a number (missing or garbled: 0).

    >>> replay_count(b"2"), replay_count("x"), replay_count(None)
    (2, 0, 0)
    """
    if value is None:
        return 0
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else 0
