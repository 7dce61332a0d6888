"""The transform stage: raw events in, validated records or dead letters out.

A Quix Streams application reads the raw topic as bytes into a :class:`RoutingSink`, which
gathers events into small batches. :class:`Transformer` turns each event of a batch into a
:class:`Routed` message, pre-serialized, for the records topic or the DLQ, and the
application's own producer (transactional under exactly-once) writes them. A batch is
written when it is full and always before Quix commits a checkpoint, so an offset is only
committed once its output is in Kafka. Nothing a client sends can stop the application:
every failure becomes a dead letter with its stage and reason.

Metrics (pipelines/core/metrics.py): ``qanat_events{stage="transform", outcome="valid"|"invalid"}``
per vertical/type, and ``qanat_invalid_events`` per reason code, one of
:data:`REASON_CODES` (the ``qanat.error.reason`` header stays human text).

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
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from quixstreams import Application
from quixstreams.models import HeadersTuples
from quixstreams.sinks import BaseSink

from pipelines.core.config import CoreSettings, KafkaSettings, QanatSettings
from pipelines.core.deadletter import dead_letter_headers, fit_dead_letter, message_size
from pipelines.core.errors import InvalidRecordError
from pipelines.core.metrics import add_tallies, retire_tallies
from pipelines.core.quixapp import quix_application
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
    topic_max_message_bytes,
)
from pipelines.transform.lanes import REASON_CODES, UNKNOWN, Lane, header_text
from pipelines.transform.registry import follow_schemas
from pipelines.transform.schemas import SchemaStore

__all__ = ["REASON_CODES", "RoutingSink", "TransformSettings", "Transformer"]

logger = logging.getLogger(__name__)
# Below the limit by more than this, a record's headers and key cannot make it too large.
_HEADROOM = 64 * 1024
NO_SCHEMA = "no schema registered"
MAX_LANES = 4096
# A batch's events, ~3 KB each in memory, stay within a 1 MiB L2 cache; 1000 ran slower.
BATCH_EVENTS = 200
BATCH_BYTES = 4 * 1024 * 1024


class TransformSettings(QanatSettings):
    """Settings of ``qanat transform``."""

    yaml_section: ClassVar[str] = "transform"
    model_config = SettingsConfigDict(env_prefix="QANAT_TRANSFORM_", extra="forbid")

    schema_dir: Path = Field(
        Path("schemas"),
        description="Directory of JSON Schemas, {vertical}/{type}.json, registered at start "
        "(an unchanged file is a no-op); the schemas topic is then followed live.",
    )
    schemaless: Literal["accept", "reject"] = Field(
        "accept",
        description="Events of a vertical/type with no registered schema: 'accept' them "
        "unvalidated (schema_version null), or 'reject' them to the DLQ at stage validate "
        "with reason 'no schema registered'.",
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1, description="Raw events larger than this go to the DLQ."
    )
    max_name_length: int = Field(1024, ge=1, description="Longest accepted `name`.")
    max_record_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest normalized record written to the records topic (a larger one "
        "is a dead letter, record_too_large); unset: the records topic's max.message.bytes, "
        "read from the broker at start, and at most the producer's 1,000,000.",
        examples=[1_000_000],
    )
    max_dead_letter_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest dead letter: a larger one keeps its headers and a truncated "
        "value, marked by qanat.error.truncated; unset: read from the DLQ topic like "
        "max_record_bytes.",
        examples=[1_000_000],
    )
    consumer_group: str = Field("transform", description="Consumer group (after the prefix).")
    commit_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between offset commits; also the longest an event waits in a "
        "batch that is not full.",
    )
    max_batch_events: int = Field(
        BATCH_EVENTS,
        ge=1,
        description="Events transformed and written together: a batch is written once it "
        "holds this many events (or max_batch_bytes), else at the next commit.",
    )
    max_batch_bytes: int = Field(
        BATCH_BYTES,
        ge=1,
        description="Raw bytes a batch may hold before it is written, whatever its count.",
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="Kafka delivery guarantee of the transform."
    )


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


class RoutingSink(BaseSink):
    """The transform's last step: events are gathered in arrival order, then transformed
    and written by ``producer`` a batch at a time. Per event this costs about a third less
    than one Quix step each, as the interpreter stays on the same code; 200 events keep a
    batch's data in the CPU's cache, where 1000 were slower again.

    Quix flushes a sink before it flushes the producer and commits offsets, so a batch
    is always in Kafka (in the open transaction, under exactly-once) before the offsets
    of its events are committed. A crash loses the unwritten batch and its offsets alike.

    >>> from pipelines.transform.schemas import SchemaStore
    >>> sent = []
    >>> class Producer:
    ...     def produce(self, topic, value, key, headers, timestamp):
    ...         sent.append((topic, key))
    >>> sink = RoutingSink(Transformer(SchemaStore()), Producer(), "records", "dlq")
    >>> meta = RawMeta("shop", "product", "http", "i1", "e1", "2026-01-01T00:00:00.000000Z")
    >>> sink.add(b'{"name": "Lamp", "source_id": "7"}', b"k", 0, meta.headers(), "raw", 0, 0)
    >>> sink.add(b"not json", b"k", 0, meta.headers(), "raw", 0, 1)
    >>> sent
    []
    >>> sink.flush()
    >>> sent
    [('records', b'shop/product/7'), ('dlq', b'k')]
    """

    def __init__(
        self,
        transformer: Transformer,
        producer: Any,
        records_topic: str,
        dlq_topic: str,
        max_events: int = BATCH_EVENTS,
        max_bytes: int = BATCH_BYTES,
    ) -> None:
        super().__init__()
        self._transformer, self._producer = transformer, producer
        self._records, self._dlq = records_topic, dlq_topic
        self._max_events, self._max_bytes = max_events, max_bytes
        self._pending: list[tuple[Any, ...]] = []
        self._bytes = 0

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: HeadersTuples,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self._pending.append((value, key, timestamp, headers, topic, partition, offset))
        if value is not None:
            self._bytes += len(value)
        if len(self._pending) >= self._max_events or self._bytes >= self._max_bytes:
            self.flush()

    def flush(self) -> None:
        """Transform and produce every pending event, in the order they arrived."""
        pending, self._pending, self._bytes = self._pending, [], 0
        process = self._transformer.process
        # All of the batch's Python first, then all of its produce calls: each phase
        # keeps its own code and data hot.
        routed = [
            (process(value, key, headers, topic, partition, offset), timestamp)
            for value, key, timestamp, headers, topic, partition, offset in pending
        ]
        produce, records, dlq = self._producer.produce, self._records, self._dlq
        for message, timestamp in routed:
            produce(
                dlq if message.dead else records,
                message.payload,
                message.key,
                headers=message.headers,
                timestamp=timestamp,
            )

    def on_paused(self) -> None:
        """Quix will read the checkpoint's events again: what is pending is dropped."""
        self._pending, self._bytes = [], 0


def output_limits(kafka: KafkaSettings, settings: TransformSettings) -> tuple[int, int]:
    """The largest record and dead letter the transform may write: the settings, else the
    topics' ``max.message.bytes`` (within what the producer itself takes)."""
    limits = []
    for setting, topic in (
        (settings.max_record_bytes, kafka.topics.records),
        (settings.max_dead_letter_bytes, kafka.topics.dlq),
    ):
        if setting is None:
            setting = min(
                topic_max_message_bytes(kafka.client(), topic), PRODUCER_MAX_MESSAGE_BYTES
            )
        limits.append(setting)
    return limits[0], limits[1]


def build_transform_app(
    kafka: KafkaSettings,
    core: CoreSettings,
    settings: TransformSettings,
    transformer: Transformer | None = None,
    schemas: SchemaStore | None = None,
) -> Application:
    """The Quix Streams application of ``qanat transform``.

    Without ``transformer`` or ``schemas``, the schema directory seeds the registry and a
    :class:`~pipelines.transform.registry.SchemaFollower` daemon thread keeps the schemas current.
    """
    if transformer is None:
        if schemas is None:
            schemas, _follower = follow_schemas(kafka, settings.schema_dir)
        transformer = Transformer(
            schemas,
            settings.max_message_bytes,
            settings.max_name_length,
            settings.schemaless,
            *output_limits(kafka, settings),
        )
    app = quix_application(
        kafka,
        core,
        settings.consumer_group,
        commit_interval=settings.commit_interval,
        processing_guarantee=settings.processing_guarantee,
    )
    names = kafka.topics
    raw = app.topic(names.raw, value_deserializer="bytes", key_deserializer="bytes")
    sdf = app.dataframe(raw)
    sink = RoutingSink(
        transformer,
        sdf.processing_context.producer,
        names.records,
        names.dlq,
        settings.max_batch_events,
        settings.max_batch_bytes,
    )
    sdf.sink(sink)
    return app
