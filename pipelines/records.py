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

from pipelines.errors import InvalidRecordError
from pipelines.topics import (
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

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MAX_SOURCE_ID_LENGTH = 512
ENTITY_FIELDS = frozenset({"name", "source_id", "vertical_data"})
# Item-shape fields that are consumed (mapped) rather than folded into vertical_data.
ITEM_CONSUMED = frozenset({"title", "source_id", "idempotency_key", "vertical_data"})
# Fields that carry the record's own time, first match wins.
EVENT_TIME_FIELDS = ("event_time", "timestamp", "date")
NORMALIZE = "normalize"


def check_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid vertical/type name, else raise ValueError."""
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{kind} {value!r} must match {IDENTIFIER.pattern}: lowercase letter first, "
            "then up to 62 lowercase letters, digits, '_' or '-'"
        )
    return value


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so text order is time order."""
    # isoformat is several times faster than strftime, and this runs once per record.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def now() -> str:
    return format_time(datetime.now(UTC))


def parse_time(value: Any) -> datetime:
    """An ISO 8601 / RFC 3339 string or epoch seconds/milliseconds, as aware UTC."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ValueError(f"expected an RFC 3339 string or epoch number, got {type(value).__name__}")


def new_id() -> str:
    return str(uuid.uuid4())


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
            raise InvalidRecordError(
                "parse",
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


def _invalid(reason: str, path: str, message: str) -> InvalidRecordError:
    return InvalidRecordError(NORMALIZE, reason, [{"path": path, "message": message}])


def _source_id(obj: dict[str, Any]) -> str:
    for field in ("source_id", "idempotency_key"):
        if field not in obj or obj[field] is None:
            continue
        value = obj[field]
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"invalid {field}", f"$.{field}", "must be a non-empty string")
        if len(value) > MAX_SOURCE_ID_LENGTH:
            raise _invalid(
                f"invalid {field}", f"$.{field}", f"longer than {MAX_SOURCE_ID_LENGTH} characters"
            )
        return value
    return content_hash(obj)


def _name(obj: dict[str, Any], field: str, max_length: int) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"missing {field}", f"$.{field}", "required: a non-empty string")
    if len(value) > max_length:
        raise _invalid(f"{field} too long", f"$.{field}", f"longer than {max_length} characters")
    return value


def _vertical_data(obj: dict[str, Any], consumed: frozenset[str]) -> dict[str, Any]:
    explicit = obj.get("vertical_data")
    if explicit is not None and not isinstance(explicit, dict):
        raise _invalid("invalid vertical_data", "$.vertical_data", "must be an object")
    folded = {key: value for key, value in obj.items() if key not in consumed}
    return folded | (explicit or {})


def _event_time(obj: dict[str, Any], received_at: str) -> str:
    for field in EVENT_TIME_FIELDS:
        if obj.get(field) is None:
            continue
        try:
            return format_time(parse_time(obj[field]))
        except (ValueError, OverflowError, OSError) as exc:
            raise _invalid("unparsable event time", f"$.{field}", str(exc)) from None
    return received_at


def normalize(
    obj: Any, meta: RawMeta, schema_version: int | None = None, max_name_length: int = 1024
) -> dict[str, Any]:
    """Turn a client object (entity or item shape) into a record; InvalidRecordError if bad."""
    if not isinstance(obj, dict):
        raise _invalid("not a JSON object", "$", f"expected an object, got {type(obj).__name__}")
    if is_item_shape(obj):
        name = _name(obj, "title", max_name_length)
        data = _vertical_data(obj, ITEM_CONSUMED)
    else:
        name = _name(obj, "name", max_name_length)
        data = _vertical_data(obj, ENTITY_FIELDS)
    return {
        "vertical": meta.vertical,
        "type": meta.type,
        "source_id": _source_id(obj),
        "name": name,
        "vertical_data": data,
        "source": meta.source,
        "ingestion_id": meta.ingestion_id,
        "event_id": meta.event_id,
        "event_time": _event_time(obj, meta.received_at),
        "received_at": meta.received_at,
        "schema_version": schema_version,
    }
