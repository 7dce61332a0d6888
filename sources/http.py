"""The HTTP source: clients push records, qanat answers 202 once Kafka has them.

Routes (all under ``/api/v1``): ``POST /ingest/{vertical}/{type}/batch`` with
``{"records": [...]}`` (entity shape) or ``{"items": [...]}`` (item shape);
``POST /ingest/{vertical}/{type}`` with one record; ``POST /ingest`` with one item whose
``entity`` and ``type`` name the vertical and type; ``POST /ingest/{vertical}/{type}/stream``
with NDJSON, read and produced line by line (:mod:`sources.http_stream`).

Every error a client can cause is a 4xx with a JSON body saying what is wrong and where
(:mod:`sources.http_errors`). Records that are JSON objects but invalid are accepted: the
transform stage validates them and keeps the rejects, with reasons, in the DLQ.

>>> from fastapi.testclient import TestClient                       # doctest: +SKIP
>>> app = create_app(KafkaSettings(), HttpSourceSettings())          # doctest: +SKIP
>>> TestClient(app).post("/api/v1/ingest/shop/product/batch",        # doctest: +SKIP
...                      json={"records": [{"name": "Lamp", "source_id": "p1"}]}).status_code
202
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipelines.config import KafkaSettings, QanatSettings
from pipelines.records import RawEvent, check_identifier
from pipelines.topics import H_EVENT_ID, ensure_topics
from sources.base import KafkaPublisher, build_raw_events
from sources.http_errors import ApiError, install_error_handlers
from sources.http_stream import NDJSON_TYPES, StreamTarget, ingest_ndjson

__all__ = ["ApiError", "HttpSourceSettings", "create_app"]

logger = logging.getLogger(__name__)
SOURCE_NAME = "http"
JSON_TYPES = ("application/json", "text/json")
BATCH_KEYS = ("records", "items")


class HttpSourceSettings(QanatSettings):
    """Settings of ``qanat source http``."""

    yaml_section: ClassVar[str] = "http"
    model_config = SettingsConfigDict(env_prefix="QANAT_HTTP_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.", examples=["0.0.0.0"])
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest accepted batch or single request body; 413 beyond "
        "(a stream has no total limit, only max_line_bytes).",
    )
    max_records: int = Field(1000, ge=1, description="Most records in one batch; 413 beyond.")
    delivery_timeout_s: float = Field(
        30.0, gt=0, description="How long to wait for Kafka's acknowledgement before a 503."
    )
    max_line_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Longest line of an NDJSON stream; a longer line is rejected (with its "
        "line number) and skipped, and the stream goes on.",
    )
    stream_max_errors: int = Field(
        100,
        ge=0,
        description="Most rejected lines an NDJSON stream's response lists; the rest are "
        "only counted.",
    )
    producer_queue_max_messages: int = Field(
        100_000,
        ge=1,
        description="Capacity, in messages, of the Kafka producer's local queue "
        "(queue.buffering.max.messages); when it is full a stream stops reading its body.",
    )
    producer_queue_max_kbytes: int = Field(
        32 * 1024,
        ge=1,
        description="Capacity, in KiB, of the Kafka producer's local queue "
        "(queue.buffering.max.kbytes): bounds the service's memory under a large stream.",
    )


def _body_doc(media_types: Sequence[str], schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a body the route reads itself (so it can stream it and word its errors)."""
    content = {media: {"schema": schema} for media in media_types}
    return {"requestBody": {"required": True, "content": content}}


OBJECT: dict[str, Any] = {"type": "object"}
LIST_OF_OBJECTS: dict[str, Any] = {"type": "array", "items": OBJECT}
BATCH_DOC = _body_doc(
    JSON_TYPES[:1],
    {
        "oneOf": [
            {"type": "object", "required": ["records"], "properties": {"records": LIST_OF_OBJECTS}},
            {"type": "object", "required": ["items"], "properties": {"items": LIST_OF_OBJECTS}},
        ]
    },
)
ONE_DOC = _body_doc(JSON_TYPES[:1], OBJECT)
ITEM_DOC = _body_doc(
    JSON_TYPES[:1],
    {
        "type": "object",
        "required": ["entity", "type"],
        "properties": {"entity": {"type": "string"}, "type": {"type": "string"}},
    },
)
STREAM_DOC = _body_doc(("application/x-ndjson", "application/jsonl"), {"type": "string"})


def _identifier(kind: str, value: str) -> str:
    try:
        return check_identifier(kind, value)
    except ValueError as exc:
        raise ApiError(400, f"invalid_{kind}", str(exc), f"path.{kind}") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request, default: str) -> str:
    return request.headers.get("content-type", default).split(";", 1)[0].strip().lower()


def _check_content_type(request: Request) -> None:
    media = _media_type(request, "application/json")
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected application/json, got {media!r}",
            "header.content-type",
        )


def _check_stream_content_type(request: Request) -> None:
    media = _media_type(request, "")
    if media not in NDJSON_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected {' or '.join(NDJSON_TYPES)}, got {media or 'no content type'!r}",
            "header.content-type",
        )


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", "body") from None


def _parse_batch(body: bytes, max_records: int) -> list[Any]:
    parsed = _parse_json(body)
    expected = 'expected an object {"records": [...]} or {"items": [...]}'
    if not isinstance(parsed, dict):
        raise ApiError(422, "invalid_body", f"{expected}, got {type(parsed).__name__}", "body")
    present = [key for key in BATCH_KEYS if key in parsed]
    if not present:
        raise ApiError(422, "invalid_body", f"{expected}: neither field is there", "body")
    if len(present) > 1:
        raise ApiError(422, "invalid_body", f"{expected}: not both", "body")
    key = present[0]
    records = parsed[key]
    if not isinstance(records, list):
        raise ApiError(
            422,
            f"invalid_{key}",
            f"{key} must be a list, got {type(records).__name__}",
            f"body.{key}",
        )
    if len(records) > max_records:
        raise ApiError(
            413,
            "too_many_records",
            f"{len(records)} records, at most {max_records} per request",
            f"body.{key}",
        )
    return records


def _parse_object(body: bytes) -> dict[str, Any]:
    parsed = _parse_json(body)
    if not isinstance(parsed, dict):
        raise ApiError(
            422, "invalid_body", f"expected an object, got {type(parsed).__name__}", "body"
        )
    return parsed


def _body_identifier(item: dict[str, Any], field: str, kind: str) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise ApiError(422, f"invalid_{kind}", f"{field} {problem}", f"body.{field}")
    try:
        return check_identifier(kind, value)
    except ValueError as exc:
        raise ApiError(422, f"invalid_{kind}", str(exc), f"body.{field}") from None


def _event_id(event: RawEvent) -> str:
    return next(value.decode() for name, value in event.headers if name == H_EVENT_ID)


def create_app(
    kafka: KafkaSettings, settings: HttpSourceSettings, publisher: KafkaPublisher | None = None
) -> FastAPI:
    """The ingest API; it creates the qanat topics and its Kafka producer on start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
        app.state.publisher = publisher or KafkaPublisher(
            kafka,
            settings.delivery_timeout_s,
            queue_max_messages=settings.producer_queue_max_messages,
            queue_max_kbytes=settings.producer_queue_max_kbytes,
        )
        try:
            yield
        finally:
            app.state.publisher.close()

    app = FastAPI(title="qanat ingest API", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)

    async def publish(
        request: Request,
        vertical: str,
        type_: str,
        records: Sequence[Any],
        values: Sequence[bytes] | None = None,
    ) -> tuple[str, list[RawEvent]]:
        if values is None:
            values = [orjson.dumps(record) for record in records]
        ingestion_id, events = build_raw_events(values, vertical, type_, SOURCE_NAME, records)
        await request.app.state.publisher.publish(kafka.topics.raw, events)
        return ingestion_id, events

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/ingest/{vertical}/{type}/batch", status_code=202, openapi_extra=BATCH_DOC)
    async def ingest_batch(vertical: str, type: str, request: Request) -> dict[str, Any]:
        """Accept ``{"records": [...]}`` or ``{"items": [...]}``; 202 once Kafka
        acknowledged every record."""
        vertical, type_ = _identifier("vertical", vertical), _identifier("type", type)
        _check_content_type(request)
        records = _parse_batch(
            await _read_body(request, settings.max_body_bytes), settings.max_records
        )
        ingestion_id, events = await publish(request, vertical, type_, records)
        return {"ingestion_id": ingestion_id, "record_count": len(events)}

    @app.post("/api/v1/ingest/{vertical}/{type}/stream", status_code=202, openapi_extra=STREAM_DOC)
    async def ingest_stream(vertical: str, type: str, request: Request) -> dict[str, Any]:
        """NDJSON, one object per line, read and produced as it arrives; 202 with the
        accepted and rejected line counts once Kafka acknowledged every accepted line."""
        vertical, type_ = _identifier("vertical", vertical), _identifier("type", type)
        _check_stream_content_type(request)
        target = StreamTarget(
            request.app.state.publisher, kafka.topics.raw, vertical, type_, SOURCE_NAME
        )
        return await ingest_ndjson(
            request.stream(), target, settings.max_line_bytes, settings.stream_max_errors
        )

    @app.post("/api/v1/ingest/{vertical}/{type}", status_code=202, openapi_extra=ONE_DOC)
    async def ingest_one(vertical: str, type: str, request: Request) -> dict[str, Any]:
        """One record (entity or item shape); 202 once Kafka acknowledged it."""
        vertical, type_ = _identifier("vertical", vertical), _identifier("type", type)
        _check_content_type(request)
        body = await _read_body(request, settings.max_body_bytes)
        record = _parse_object(body)
        ingestion_id, events = await publish(request, vertical, type_, [record], [body])
        return {"ingestion_id": ingestion_id, "record_count": 1, "event_id": _event_id(events[0])}

    @app.post("/api/v1/ingest", status_code=202, openapi_extra=ITEM_DOC)
    async def ingest_item(request: Request) -> dict[str, Any]:
        """One item whose ``entity`` names the vertical and ``type`` the type."""
        _check_content_type(request)
        body = await _read_body(request, settings.max_body_bytes)
        item = _parse_object(body)
        vertical = _body_identifier(item, "entity", "vertical")
        type_ = _body_identifier(item, "type", "type")
        ingestion_id, events = await publish(request, vertical, type_, [item], [body])
        return {"ingestion_id": ingestion_id, "record_count": 1, "event_id": _event_id(events[0])}

    return app
