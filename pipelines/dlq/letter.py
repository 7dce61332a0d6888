"""One dead letter as read from the ``<prefix>.dlq`` topic, and its bytes made fit for JSON.

:class:`DeadLetter` is a DLQ message with its position (partition, offset, Kafka's
timestamp), its key, value and headers untouched; the header contract of design.md ("Dead
letter") is decoded lazily, on first use, so a replay without filters never decodes it.
:func:`text_or_base64` and :func:`value_for_json` are how ``qanat dlq show``, the export and
the DLQ routes write a key or a value that may not be text.

>>> letter = DeadLetter(0, 7, 0, b"k", b"{}", [("qanat.vertical", b"shop"),
...     ("qanat.error.stage", b"validate"), ("qanat.error.reason", b"schema failed")])
>>> letter.vertical, letter.stage, letter.reason, letter.replay_count
('shop', 'validate', 'schema failed', 0)
>>> letter.brief()["time"], letter.brief()["key"]
('1970-01-01T00:00:00.000000Z', 'k')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from pipelines.core.deadletter import replay_count
from pipelines.core.records import format_time, parse_time
from pipelines.core.topics import (
    H_ERROR_AT,
    H_ERROR_DETAILS,
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_INGESTION_ID,
    H_REPLAY_COUNT,
    H_TYPE,
    H_VERTICAL,
    Headers,
    decode_headers,
)


class DeadLetter:
    """One message of the DLQ topic, as read (``timestamp``: Kafka's, in ms)."""

    __slots__ = ("_fields", "_time", "headers", "key", "offset", "partition", "timestamp", "value")

    def __init__(
        self,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        self.partition, self.offset, self.timestamp = partition, offset, timestamp
        self.key, self.value, self.headers = key, value, headers
        self._fields: dict[str, str] | None = None
        self._time: datetime | None = None

    @property
    def fields(self) -> dict[str, str]:
        """The headers as text, decoded on first use (a replay without filters never needs
        them: the hot path)."""
        if self._fields is None:
            self._fields = decode_headers(self.headers)
        return self._fields

    @property
    def vertical(self) -> str | None:
        return self.fields.get(H_VERTICAL)

    @property
    def type(self) -> str | None:
        return self.fields.get(H_TYPE)

    @property
    def stage(self) -> str | None:
        return self.fields.get(H_ERROR_STAGE)

    @property
    def reason(self) -> str | None:
        return self.fields.get(H_ERROR_REASON)

    @property
    def replay_count(self) -> int:
        for name, value in reversed(self.headers):  # the last one counts; it comes last
            if name == H_REPLAY_COUNT:
                return replay_count(value)
        return 0

    @property
    def time(self) -> datetime:
        """When it failed (``qanat.error.at``), else when Kafka stored it."""
        if self._time is None:
            self._time = self._failed_at()
        return self._time

    def _failed_at(self) -> datetime:
        at = self.fields.get(H_ERROR_AT)
        if at:
            try:
                return parse_time(at)
            except (ValueError, OverflowError):
                pass
        return datetime.fromtimestamp(max(self.timestamp, 0) / 1000, UTC)

    def details(self) -> Any:
        text = self.fields.get(H_ERROR_DETAILS)
        if text is None:
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text

    def brief(self) -> dict[str, Any]:
        """The columns of ``qanat dlq ls`` and of ``GET /api/v1/dlq`` items."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": format_time(self.time),
            "vertical": self.vertical,
            "type": self.type,
            "stage": self.stage,
            "reason": self.reason,
            "ingestion_id": self.fields.get(H_INGESTION_ID),
            "replay_count": self.replay_count,
            "key": text_or_base64(self.key)[0],
        }

    def full(self) -> dict[str, Any]:
        """Everything: the brief columns, every header, the key and value, the details."""
        key, key_encoding = text_or_base64(self.key)
        value, value_encoding = value_for_json(self.value)
        return {
            **self.brief(),
            "key": key,
            "key_encoding": key_encoding,
            "value": value,
            "value_encoding": value_encoding,
            "headers": self.fields,
            "details": self.details(),
        }


def text_or_base64(raw: bytes | None) -> tuple[str | None, str]:
    """Bytes for JSON: ``(text, "utf-8")``, ``(base64, "base64")`` or ``(None, "none")``."""
    import base64

    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def value_for_json(raw: bytes | None) -> tuple[Any, str]:
    """A value for JSON: parsed (``"json"``), else base64 (``"base64"``), or ``"none"``.

    >>> value_for_json(b'{"a": 1}'), value_for_json(b"\\xff"), value_for_json(None)
    (({'a': 1}, 'json'), ('/w==', 'base64'), (None, 'none'))
    """
    import base64

    if raw is None:
        return None, "none"
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
