"""The transform stage: raw events in, validated records or dead letters out.

A Quix Streams application reads the raw topic as bytes. :class:`Transformer` turns each
event into a :class:`Routed` message, pre-serialized, for the records topic or the DLQ;
one ``to_topic`` call with a topic chosen per message produces it. Nothing a client sends
can stop the application: every failure becomes a dead letter with its stage and reason.

>>> t = Transformer(SchemaStore())
>>> meta = RawMeta("shop", "product", "http", "i1", "e1", "2026-01-01T00:00:00.000000Z")
>>> t.process(b'{"name": "Lamp"}', b"e1", meta.headers(), "qanat.raw", 0, 0).dead
False
>>> t.process(b'not json', b"e1", meta.headers(), "qanat.raw", 0, 1).dead
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from quixstreams import Application, message_context
from quixstreams.models import Topic
from quixstreams.models.serializers import Serializer

from pipelines.config import CoreSettings, KafkaSettings, QanatSettings
from pipelines.dlq import dead_letter_headers
from pipelines.errors import InvalidRecordError
from pipelines.quixapp import quix_application
from pipelines.records import IDENTIFIER, RawMeta, normalize
from pipelines.registry import follow_schemas
from pipelines.schemas import SchemaStore
from pipelines.topics import Headers, decode_headers, record_key

logger = logging.getLogger(__name__)
NO_SCHEMA = "no schema registered"


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
    consumer_group: str = Field("transform", description="Consumer group (after the prefix).")
    commit_interval: float = Field(1.0, gt=0, description="Seconds between offset commits.")
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="Kafka delivery guarantee of the transform."
    )


@dataclass(frozen=True, slots=True)
class Routed:
    """One output message, already serialized; ``dead`` picks the DLQ over records."""

    dead: bool
    key: bytes | None
    payload: bytes | None
    headers: Headers


class _PayloadSerializer(Serializer):
    """Routed messages carry their bytes already; the topic only passes them on."""

    def __call__(self, value: Routed, ctx: Any) -> bytes | None:  # type: ignore[override]
        return value.payload


class Transformer:
    """Validates and normalizes one raw event at a time (pure: no I/O)."""

    def __init__(
        self,
        schemas: SchemaStore,
        max_message_bytes: int = 1_048_576,
        max_name_length: int = 1024,
        schemaless: Literal["accept", "reject"] = "accept",
    ) -> None:
        self.schemas = schemas
        self.max_message_bytes = max_message_bytes
        self.max_name_length = max_name_length
        self.reject_schemaless = schemaless == "reject"

    def process(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> Routed:
        try:
            record = self._record(value, decode_headers(headers))
        except InvalidRecordError as error:
            return self._dead(value, key, headers, error, topic, partition, offset)
        except Exception as exc:  # a bug must not stop the stream: keep the event, say why
            logger.exception("unexpected error on %s[%d]@%d", topic, partition, offset)
            internal = InvalidRecordError(
                "normalize",
                f"internal error: {type(exc).__name__}",
                [{"path": "$", "message": str(exc)[:500]}],
            )
            return self._dead(value, key, headers, internal, topic, partition, offset)
        out_key = record_key(record["vertical"], record["type"], record["source_id"]).encode()
        return Routed(False, out_key, orjson.dumps(record), list(headers or ()))

    def _record(self, value: bytes | None, headers: dict[str, str]) -> dict[str, Any]:
        meta = RawMeta.from_headers(headers)
        for kind in ("vertical", "type"):
            if not IDENTIFIER.match(getattr(meta, kind)):
                raise InvalidRecordError(
                    "parse",
                    f"invalid {kind} header",
                    [
                        {
                            "path": f"headers.qanat.{kind}",
                            "message": f"must match {IDENTIFIER.pattern}",
                        }
                    ],
                )
        if value is None:
            raise InvalidRecordError("parse", "empty message", [])
        if len(value) > self.max_message_bytes:
            raise InvalidRecordError(
                "parse",
                "message too large",
                [{"path": "$", "message": f"{len(value)} bytes > {self.max_message_bytes}"}],
            )
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidRecordError(
                "parse", "not valid JSON", [{"path": "$", "message": str(exc)}]
            ) from None
        version, errors = self.schemas.validate(meta.vertical, meta.type, obj)
        if version is None and self.reject_schemaless:
            raise InvalidRecordError(
                "validate",
                NO_SCHEMA,
                [{"path": "$", "message": f"no schema for {meta.vertical}/{meta.type}"}],
            )
        if errors:
            reason = (
                f"schema validation failed: {len(errors)} error(s), first at {errors[0]['path']}"
            )
            raise InvalidRecordError("validate", reason, errors)
        return normalize(obj, meta, version, self.max_name_length)

    @staticmethod
    def _dead(
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        error: InvalidRecordError,
        topic: str,
        partition: int,
        offset: int,
    ) -> Routed:
        dead_headers = dead_letter_headers(
            headers,
            stage=error.stage,
            reason=error.reason,
            details=error.details,
            topic=topic,
            partition=partition,
            offset=offset,
        )
        return Routed(True, key, value, dead_headers)


def build_transform_app(
    kafka: KafkaSettings,
    core: CoreSettings,
    settings: TransformSettings,
    transformer: Transformer | None = None,
    schemas: SchemaStore | None = None,
) -> Application:
    """The Quix Streams application of ``qanat transform``.

    Without ``transformer`` or ``schemas``, the schema directory seeds the registry and a
    :class:`~pipelines.registry.SchemaFollower` daemon thread keeps the schemas current.
    """
    if transformer is None:
        if schemas is None:
            schemas, _follower = follow_schemas(kafka, settings.schema_dir)
        transformer = Transformer(
            schemas, settings.max_message_bytes, settings.max_name_length, settings.schemaless
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
    records = app.topic(
        names.records, value_serializer=_PayloadSerializer(), key_serializer="bytes"
    )
    dlq = app.topic(names.dlq, value_serializer=_PayloadSerializer(), key_serializer="bytes")

    def route(value: bytes | None, key: bytes | None, _ts: int, headers: Headers | None) -> Routed:
        ctx = message_context()
        return transformer.process(value, key, headers, ctx.topic, ctx.partition, ctx.offset)

    def choose(routed: Routed, *_: Any) -> Topic:
        return dlq if routed.dead else records

    sdf = app.dataframe(raw).apply(route, metadata=True)
    sdf = sdf.set_headers(lambda routed, *_: routed.headers)
    sdf.to_topic(choose, key=lambda routed: routed.key)
    return app
