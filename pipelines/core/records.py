"""The record contract: raw events in, normalized records out (design.md).

>>> meta = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")
>>> rec = normalize({"name": "Lamp", "source_id": "p1", "price": 9}, meta)
>>> rec["vertical_data"], rec["event_time"]
({'price': 9}, '2026-01-02T03:04:05.000000Z')
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from pipelines.core.errors import InvalidRecordError
from pipelines.core.topics import (
    H_CONTENT_TYPE,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    Headers,
    encode_headers,
    record_key,
)

# Always checked with fullmatch: with match, "$" also accepts a trailing newline.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MAX_SOURCE_ID_LENGTH = 512
MAX_NESTING_DEPTH = 128
"""The deepest a record may nest arrays and objects (a top-level object is depth 1). orjson
serializes at most 254 levels and a record wraps the client's object in two more (the
record, ``vertical_data``); 128 leaves room for user steps, and every stage, the stdlib's
recursive code included, can handle it. The HTTP edge refuses deeper bodies; the transform
dead-letters deeper events from any other source."""
ENTITY_FIELDS = frozenset({"name", "source_id", "vertical_data"})
# Item-shape fields that are consumed (mapped) rather than folded into vertical_data.
ITEM_CONSUMED = frozenset({"title", "source_id", "idempotency_key", "vertical_data"})
# Fields that carry the record's own time, first match wins.
EVENT_TIME_FIELDS = ("event_time", "timestamp", "date")
NORMALIZE = "normalize"


class RecordError(InvalidRecordError):
    """An invalid record with a short reason ``code`` (a bounded metrics label) beside its
    human ``reason``.

    >>> RecordError("parse", "not_json", "not valid JSON").code
    'not_json'
    """

    def __init__(
        self, stage: str, code: str, reason: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(stage, reason, details)
        self.code = code


def check_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid vertical/type name, else raise ValueError."""
    if not (isinstance(value, str) and IDENTIFIER.fullmatch(value)):
        raise ValueError(
            f"{kind} {value!r} must match {IDENTIFIER.pattern}: lowercase letter first, "
            "then up to 62 lowercase letters, digits, '_' or '-'"
        )
    return value


def too_deep(value: Any, limit: int = MAX_NESTING_DEPTH) -> str | None:
    """The JSON path (``$.a.0``) of the first container nested deeper than ``limit``, or
    None; iterative, so no depth can exhaust the stack.

    >>> too_deep({"a": [[1]]}, limit=2)
    '$.a.0'
    >>> too_deep({"a": [1]}, limit=2) is None
    True
    """
    stack: list[tuple[Any, str, int]] = [(value, "$", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.items()
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        if depth > limit:
            return path
        for name, child in children:
            if isinstance(child, dict | list):
                stack.append((child, f"{path}.{name}", depth + 1))
    return None


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so text order is time order."""
    # isoformat is several times faster than strftime, and this runs once per record.
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def now() -> str:
    return format_time(datetime.now(UTC))


def parse_time(value: Any) -> datetime:
    """An ISO 8601 / RFC 3339 string or epoch seconds/milliseconds, as aware UTC."""
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    raise ValueError(f"expected an RFC 3339 string or epoch number, got {type(value).__name__}")


def new_id() -> str:
    return str(uuid.uuid4())


MAX_INGESTION_ID = 128


def valid_ingestion_id(ingestion_id: str) -> bool:
    """Whether ``GET /ingestions/{id}`` can be asked about ``ingestion_id``: 1 to
    :data:`MAX_INGESTION_ID` printable characters (a sink counts progress only for these).

    >>> valid_ingestion_id("i1"), valid_ingestion_id("a" + chr(0)), valid_ingestion_id("")
    (True, False, False)
    """
    return 0 < len(ingestion_id) <= MAX_INGESTION_ID and ingestion_id.isprintable()


_META_HEADERS = (H_VERTICAL, H_TYPE, H_SOURCE, H_INGESTION_ID, H_EVENT_ID, H_RECEIVED_AT)


class RawMeta(NamedTuple):
    """What the raw event's headers say about it (a tuple: built once per event)."""

    vertical: str
    type: str
    source: str
    ingestion_id: str
    event_id: str
    received_at: str

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> RawMeta:
        values = [headers.get(name) for name in _META_HEADERS]
        if not all(values):
            raise RecordError(
                "parse",
                "missing_headers",
                "missing contract headers",
                [
                    {"path": f"headers.{name}", "message": "required header is missing"}
                    for name, value in zip(_META_HEADERS, values, strict=True)
                    if not value
                ],
            )
        return cls(*values)  # type: ignore[arg-type]

    def headers(self, content_type: str = "application/json") -> Headers:
        return encode_headers(
            {
                H_VERTICAL: self.vertical,
                H_TYPE: self.type,
                H_SOURCE: self.source,
                H_INGESTION_ID: self.ingestion_id,
                H_EVENT_ID: self.event_id,
                H_RECEIVED_AT: self.received_at,
                H_CONTENT_TYPE: content_type,
            }
        )


@dataclass(frozen=True)
class RawEvent:
    """One message for the raw topic: the client's bytes, untouched, with contract headers."""

    key: str
    value: bytes
    headers: Headers


def is_item_shape(obj: dict[str, Any]) -> bool:
    return "name" not in obj and "title" in obj


def client_source_id(obj: Any) -> str | None:
    """The upsert key the client gave (source_id, else idempotency_key), if usable."""
    if not isinstance(obj, dict):
        return None
    for field in ("source_id", "idempotency_key"):
        value = obj.get(field)
        if isinstance(value, str) and 0 < len(value) <= MAX_SOURCE_ID_LENGTH:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def raw_event(value: bytes, obj: Any, meta: RawMeta) -> RawEvent:
    """The raw-topic message for one client record (``obj`` is ``value`` parsed)."""
    source_id = client_source_id(obj)
    key = record_key(meta.vertical, meta.type, source_id) if source_id else meta.event_id
    return RawEvent(key=key, value=value, headers=meta.headers())


def content_hash(obj: dict[str, Any]) -> str:
    """A stable id for a record without a key: same content, same id."""
    canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()[:40]


def _invalid(code: str, reason: str, path: str, message: str) -> RecordError:
    return RecordError(NORMALIZE, code, reason, [{"path": path, "message": message}])


def _source_id(obj: dict[str, Any], default: str | None = None) -> str:
    for field in ("source_id", "idempotency_key"):
        value = obj.get(field)
        if value is None:
            continue
        if value.__class__ is str and value.strip() and len(value) <= MAX_SOURCE_ID_LENGTH:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(
                "invalid_source_id", f"invalid {field}", f"$.{field}", "must be a non-empty string"
            )
        if len(value) > MAX_SOURCE_ID_LENGTH:
            raise _invalid(
                "invalid_source_id",
                f"invalid {field}",
                f"$.{field}",
                f"longer than {MAX_SOURCE_ID_LENGTH} characters",
            )
        return value
    if default and len(default) <= MAX_SOURCE_ID_LENGTH:  # e.g. the MQTT topic's device id
        return default
    return content_hash(obj)


def _name(obj: dict[str, Any], field: str, max_length: int) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(
            "missing_name", f"missing {field}", f"$.{field}", "required: a non-empty string"
        )
    if len(value) > max_length:
        raise _invalid(
            "name_too_long",
            f"{field} too long",
            f"$.{field}",
            f"longer than {max_length} characters",
        )
    return value


def _vertical_data(obj: dict[str, Any], consumed: frozenset[str]) -> dict[str, Any]:
    explicit = obj.get("vertical_data")
    if explicit is not None and not isinstance(explicit, dict):
        raise _invalid(
            "invalid_vertical_data", "invalid vertical_data", "$.vertical_data", "must be an object"
        )
    folded = obj.copy()  # then drop the few consumed keys: several times faster than a filter
    for key in consumed:
        if key in folded:
            del folded[key]
    if explicit:
        folded.update(explicit)
    return folded


# An RFC 3339 time already in UTC (or without offset: UTC too), formatted by slicing it:
# datetime.isoformat costs several times more than the parse, once per record.
_UTC_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)?")


def time_text(value: Any) -> str:
    """:func:`parse_time` then :func:`format_time`, faster for a UTC RFC 3339 string.

    >>> time_text("2026-01-02 03:04:05.5+00:00"), time_text("2026-01-02T05:04:05+02:00")
    ('2026-01-02T03:04:05.500000Z', '2026-01-02T03:04:05.000000Z')
    """
    parsed = parse_time(value)  # checks every field's range, whatever the layout
    match = _UTC_TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return format_time(parsed)
    day, clock, fraction = match.groups()
    return f"{day}T{clock}.{(fraction or '').ljust(6, '0')}Z"


def _event_time(obj: dict[str, Any], received_at: str) -> str:
    for field in EVENT_TIME_FIELDS:
        value = obj.get(field)
        if value is None:
            continue
        try:
            return time_text(value)
        except (ValueError, OverflowError, OSError) as exc:
            raise _invalid(
                "bad_event_time", "unparsable event time", f"$.{field}", str(exc)
            ) from None
    if len(received_at) == _FIXED_TIME_LENGTH:  # what every qanat source writes
        return received_at
    try:  # a replayed or hand-made event: the stores compare times as fixed-width text
        return time_text(received_at)
    except (ValueError, OverflowError, OSError) as exc:
        raise _invalid(
            "bad_event_time", "unparsable received_at header", "headers.qanat.received_at", str(exc)
        ) from None


_FIXED_TIME_LENGTH = len("2026-01-01T00:00:00.000000Z")


def normalize(
    obj: Any,
    meta: RawMeta,
    schema_version: int | None = None,
    max_name_length: int = 1024,
    default_source_id: str | None = None,
) -> dict[str, Any]:
    """Turn a client object (entity or item shape) into a record; InvalidRecordError if bad.

    ``default_source_id`` (the device id of an MQTT topic) is the source_id when the
    object has neither ``source_id`` nor ``idempotency_key``; else a content hash is.
    """
    if not isinstance(obj, dict):
        raise _invalid(
            "not_object", "not a JSON object", "$", f"expected an object, got {type(obj).__name__}"
        )
    if is_item_shape(obj):
        name = _name(obj, "title", max_name_length)
        data = _vertical_data(obj, ITEM_CONSUMED)
    else:
        name = _name(obj, "name", max_name_length)
        data = _vertical_data(obj, ENTITY_FIELDS)
    return {
        "vertical": meta.vertical,
        "type": meta.type,
        "source_id": _source_id(obj, default_source_id),
        "name": name,
        "vertical_data": data,
        "source": meta.source,
        "ingestion_id": meta.ingestion_id,
        "event_id": meta.event_id,
        "event_time": _event_time(obj, meta.received_at),
        "received_at": meta.received_at,
        "schema_version": schema_version,
    }
