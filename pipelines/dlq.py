"""The dead-letter contract: what a stage adds to an event it rejects (design.md)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from pipelines.records import now
from pipelines.topics import (
    H_ERROR_AT,
    H_ERROR_DETAILS,
    H_ERROR_OFFSET,
    H_ERROR_PARTITION,
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_ERROR_TOPIC,
    H_REPLAY_COUNT,
    Headers,
)

STAGES = ("parse", "validate", "normalize", "sink")
_ERROR_HEADERS = frozenset(
    {
        H_ERROR_AT,
        H_ERROR_DETAILS,
        H_ERROR_OFFSET,
        H_ERROR_PARTITION,
        H_ERROR_REASON,
        H_ERROR_STAGE,
        H_ERROR_TOPIC,
    }
)
MAX_REASON_LENGTH = 500


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

    >>> h = dict(dead_letter_headers([("qanat.vertical", b"shop")], stage="parse",
    ...          reason="not JSON", details=[], topic="qanat.raw", partition=0, offset=7))
    >>> h["qanat.error.stage"], h["qanat.error.offset"], h["qanat.replay.count"]
    (b'parse', b'7', b'0')
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    kept: Headers = []
    replay_count = b"0"
    for name, value in original or ():
        if name == H_REPLAY_COUNT:
            replay_count = value if isinstance(value, bytes) else str(value).encode()
        elif name not in _ERROR_HEADERS:
            kept.append((name, value if isinstance(value, bytes) else str(value).encode()))
    return [
        *kept,
        (H_ERROR_STAGE, stage.encode()),
        (H_ERROR_REASON, reason[:MAX_REASON_LENGTH].encode("utf-8", errors="replace")),
        (H_ERROR_DETAILS, orjson.dumps(details)),
        (H_ERROR_AT, now().encode()),
        (H_ERROR_TOPIC, topic.encode()),
        (H_ERROR_PARTITION, str(partition).encode()),
        (H_ERROR_OFFSET, str(offset).encode()),
        (H_REPLAY_COUNT, replay_count),
    ]
