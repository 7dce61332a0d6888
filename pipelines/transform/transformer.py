"""The per-event step of the transform stage: one raw event in, one :class:`Routed` message
out, pre-serialized, for the records topic or the DLQ.

:class:`Transformer` parses, validates (against the vertical/type's schema in a
:class:`~pipelines.transform.schemas.SchemaStore`) and normalizes each event; it does no I/O.
Nothing a client sends can make it raise: every failure becomes a dead letter with its stage
and reason, within the DLQ topic's size. The application around it (batching, producing,
settings) is :mod:`pipelines.transform.stage`.

Metrics (pipelines/core/metrics.py): ``qanat_events{stage="transform", outcome="valid"|"invalid"}``
per vertical/type, and ``qanat_invalid_events`` per reason code, one of
:data:`~pipelines.transform.lanes.REASON_CODES` (the ``qanat.error.reason`` header stays
human text).

>>> t = Transformer(SchemaStore())
>>> meta = RawMeta("shop", "product", "http", "i1", "e1", "2026-01-01T00:00:00.000000Z")
>>> t.process(b'{"name": "Lamp"}', b"e1", meta.headers(), "qanat.raw", 0, 0).dead
False
>>> t.process(b'not json', b"e1", meta.headers(), "qanat.raw", 0, 1).dead
True
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Literal, NamedTuple

import orjson

from pipelines.core.deadletter import dead_letter_headers, fit_dead_letter, message_size
from pipelines.core.errors import InvalidRecordError
from pipelines.core.metrics import add_tallies, retire_tallies
from pipelines.core.records import (
    IDENTIFIER,
    MAX_NESTING_DEPTH,
    RawMeta,
    RecordError,
    normalize,
    too_deep,
)
from pipelines.core.topics import (
    H_DEVICE_ID,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    PRODUCER_MAX_MESSAGE_BYTES,
    Headers,
)
from pipelines.transform.lanes import UNKNOWN, Lane, header_text
from pipelines.transform.schemas import SchemaStore

__all__ = ["MAX_LANES", "NO_SCHEMA", "Routed", "Transformer"]

logger = logging.getLogger(__name__)
# Below the limit by more than this, a record's headers and key cannot make it too large.
_HEADROOM = 64 * 1024
NO_SCHEMA = "no schema registered"
MAX_LANES = 4096


class Routed(NamedTuple):
    """One output message, already serialized; ``dead`` picks the DLQ over records."""

    dead: bool
    key: bytes | None
    payload: bytes | None
    headers: Headers


class Transformer:
    """Validates and normalizes one raw event at a time (no I/O; it counts metrics)."""

    def __init__(
        self,
        schemas: SchemaStore,
        max_message_bytes: int = 1_048_576,
        max_name_length: int = 1024,
        schemaless: Literal["accept", "reject"] = "accept",
        max_record_bytes: int = PRODUCER_MAX_MESSAGE_BYTES,
        max_dead_letter_bytes: int = PRODUCER_MAX_MESSAGE_BYTES,
    ) -> None:
        self.schemas = schemas
        self.max_record_bytes, self.max_dead_letter_bytes = max_record_bytes, max_dead_letter_bytes
        self.max_message_bytes = max_message_bytes
        self.max_name_length = max_name_length
        self.reject_schemaless = schemaless == "reject"
        self._lanes: dict[tuple[Any, Any], Lane] = {}
        self._unknown: Lane | None = None
        self._tallies: list[Lane] = []  # every lane whose counts are still followed
        weakref.finalize(self, retire_tallies, self._tallies)

    def _new_lane(self, vertical: str, type_: str) -> Lane:
        lane = Lane(vertical, type_)
        self._tallies.append(lane)
        add_tallies([lane])
        return lane

    def process(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> Routed:
        lane = None
        try:
            fields: dict[str, Any] = dict(headers) if headers else {}
            lane = self._lanes.get((fields.get(H_VERTICAL), fields.get(H_TYPE)))
            if lane is None:
                lane = self._lane(fields)
            record = self._record(value, fields, lane)
            if isinstance(record, RecordError):
                return self._dead(value, key, headers, record, lane, (topic, partition, offset))
            out_key = (lane.key_prefix + record["source_id"]).encode()
            payload = self._serialize(record, out_key, headers)
        except InvalidRecordError as error:
            return self._dead(value, key, headers, error, lane, (topic, partition, offset))
        except Exception as exc:  # a bug must not stop the stream: keep the event, say why
            logger.exception("unexpected error on %s[%d]@%d", topic, partition, offset)
            internal = RecordError(
                "normalize",
                "internal",
                f"internal error: {type(exc).__name__}",
                [{"path": "$", "message": str(exc)[:500]}],
            )
            return self._dead(value, key, headers, internal, lane, (topic, partition, offset))
        lane.valid += 1
        return Routed(False, out_key, payload, headers or [])

    def _serialize(self, record: dict[str, Any], key: bytes, headers: Headers | None) -> bytes:
        """The record's bytes; a dead letter if orjson cannot write it or if it would
        outgrow the records topic (the broker would refuse it, and every retry)."""
        try:
            payload = orjson.dumps(record)
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
            detail = [{"path": "$", "message": str(exc)[:500]}]
            raise RecordError(
                "normalize", "not_serializable", "record cannot be serialized", detail
            ) from None
        if len(payload) + _HEADROOM > self.max_record_bytes:  # exact only when near
            size = message_size(key, payload, headers or [])
            if size > self.max_record_bytes:
                limit = f"{size} bytes > {self.max_record_bytes} (the records topic's limit)"
                raise RecordError(
                    "normalize",
                    "record_too_large",
                    "normalized record too large",
                    [{"path": "$", "message": limit}],
                )
        return payload

    def _lane(self, fields: dict[str, Any]) -> Lane:
        """The lane of a vertical/type seen for the first time; a parse error if bad."""
        raw = (fields.get(H_VERTICAL), fields.get(H_TYPE))
        vertical, type_ = header_text(raw[0]), header_text(raw[1])
        if not (vertical and type_):
            RawMeta.from_headers({name: header_text(value) for name, value in fields.items()})
        for kind, name in (("vertical", vertical), ("type", type_)):
            if not IDENTIFIER.fullmatch(name):
                raise RecordError(
                    "parse",
                    "invalid_header",
                    f"invalid {kind} header",
                    [
                        {
                            "path": f"headers.qanat.{kind}",
                            "message": f"must match {IDENTIFIER.pattern}",
                        }
                    ],
                )
        if len(self._lanes) >= MAX_LANES:  # bounded, whatever the headers say
            retire_tallies(self._lanes.values())
            self._tallies[:] = [] if self._unknown is None else [self._unknown]
            self._lanes.clear()
        lane = self._lanes[raw] = self._new_lane(vertical, type_)
        return lane

    def _record(
        self, value: bytes | None, fields: dict[str, Any], lane: Lane
    ) -> dict[str, Any] | RecordError:
        """The record, or the schema's errors, returned: the most common dead letter is not
        worth an exception's cost. Every other invalid event raises RecordError."""
        meta = self._meta(fields, lane)
        obj = self._parse(value)
        version, errors = self.schemas.validate(lane.vertical, lane.type, obj)
        if version is None and self.reject_schemaless:
            raise RecordError(
                "validate",
                "no_schema",
                NO_SCHEMA,
                [{"path": "$", "message": f"no schema for {lane.vertical}/{lane.type}"}],
            )
        if errors:
            reason = (
                f"schema validation failed: {len(errors)} error(s), first at {errors[0]['path']}"
            )
            return RecordError("validate", "schema", reason, errors)
        device = fields.get(H_DEVICE_ID)
        device_id = header_text(device) if device else None
        return normalize(obj, meta, version, self.max_name_length, device_id)

    @staticmethod
    def _meta(fields: dict[str, Any], lane: Lane) -> RawMeta:
        source: Any
        ingestion_id: Any
        event_id: Any
        received_at: Any
        source, ingestion_id, event_id, received_at = (
            fields.get(H_SOURCE),
            fields.get(H_INGESTION_ID),
            fields.get(H_EVENT_ID),
            fields.get(H_RECEIVED_AT),
        )
        if not (source and ingestion_id and event_id and received_at):
            RawMeta.from_headers({name: header_text(value) for name, value in fields.items()})
        try:  # the hot path: every value is bytes
            return RawMeta(
                lane.vertical,
                lane.type,
                source.decode("utf-8", "replace"),
                ingestion_id.decode("utf-8", "replace"),
                event_id.decode("utf-8", "replace"),
                received_at.decode("utf-8", "replace"),
            )
        except AttributeError:
            texts = map(header_text, (source, ingestion_id, event_id, received_at))
            return RawMeta(lane.vertical, lane.type, *texts)

    def _parse(self, value: bytes | None) -> Any:
        if value is None:
            raise RecordError("parse", "empty", "empty message", [])
        if len(value) > self.max_message_bytes:
            raise RecordError(
                "parse",
                "too_large",
                "message too large",
                [{"path": "$", "message": f"{len(value)} bytes > {self.max_message_bytes}"}],
            )
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            try:
                bytes(value).decode("utf-8")
            except UnicodeDecodeError as bad:
                raise RecordError(
                    "parse",
                    "invalid_utf8",
                    "not valid JSON: invalid UTF-8",
                    [{"path": "$", "message": f"invalid UTF-8 at byte {bad.start}: {bad.reason}"}],
                ) from None
            raise RecordError(
                "parse", "not_json", "not valid JSON", [{"path": "$", "message": str(exc)}]
            ) from None
        # Only a value with that many brackets can be that deep: the walk is rarely paid.
        if value.count(b"[") + value.count(b"{") > MAX_NESTING_DEPTH:
            path = too_deep(obj)
            if path is not None:
                raise RecordError(
                    "parse",
                    "too_deep",
                    f"nested deeper than {MAX_NESTING_DEPTH} levels",
                    [{"path": path, "message": f"more than {MAX_NESTING_DEPTH} levels"}],
                )
        return obj

    def _dead(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        error: InvalidRecordError,
        lane: Lane | None,
        position: tuple[str, int, int],
    ) -> Routed:
        if lane is None:
            lane = self._unknown = self._unknown or self._new_lane(UNKNOWN, UNKNOWN)
        lane.count_invalid(getattr(error, "code", error.stage))
        topic, partition, offset = position
        dead_headers = dead_letter_headers(
            headers,
            stage=error.stage,
            reason=error.reason,
            details=error.details,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        value, dead_headers = fit_dead_letter(key, value, dead_headers, self.max_dead_letter_bytes)
        return Routed(True, key, value, dead_headers)
