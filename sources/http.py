"""The HTTP source: clients push records, qanat answers 202 once Kafka has them.

Every error a client can cause is a 4xx with a JSON body saying what is wrong and where:
``{"error": {"code": ..., "message": ..., "location": ..., "details": [...]}}``.
Records that are JSON objects but invalid are accepted: the transform stage validates
them and keeps the rejects, with reasons, in the DLQ.

>>> from fastapi.testclient import TestClient                       # doctest: +SKIP
>>> app = create_app(KafkaSettings(), HttpSourceSettings())          # doctest: +SKIP
>>> TestClient(app).post("/api/v1/ingest/shop/product/batch",        # doctest: +SKIP
...                      json={"records": [{"name": "Lamp", "source_id": "p1"}]}).status_code
202
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.config import KafkaSettings, QanatSettings
from pipelines.errors import RetriableError
from pipelines.records import check_identifier
from pipelines.topics import ensure_topics
from sources.base import KafkaPublisher, build_raw_events

logger = logging.getLogger(__name__)
SOURCE_NAME = "http"
JSON_TYPES = ("application/json", "text/json")


class HttpSourceSettings(QanatSettings):
    """Settings of ``qanat source http``."""

    yaml_section: ClassVar[str] = "http"
    model_config = SettingsConfigDict(env_prefix="QANAT_HTTP_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.", examples=["0.0.0.0"])
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest accepted request body; 413 beyond."
    )
    max_records: int = Field(1000, ge=1, description="Most records in one batch; 413 beyond.")
    delivery_timeout_s: float = Field(
        30.0, gt=0, description="How long to wait for Kafka's acknowledgement before a 503."
    )


class ApiError(Exception):
    """A client-facing error, rendered as the JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        location: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.location, self.details = location, details or []

    def response(self) -> Response:
        body = {
            "code": self.code,
            "message": self.message,
            "location": self.location,
            "details": self.details,
        }
        return Response(
            orjson.dumps({"error": body}), status_code=self.status, media_type="application/json"
        )


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


def _check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected application/json, got {media!r}",
            "header.content-type",
        )


def _parse_batch(body: bytes, max_records: int) -> list[Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", "body") from None
    if not isinstance(parsed, dict) or "records" not in parsed:
        raise ApiError(400, "invalid_body", 'expected an object {"records": [...]}', "body")
    records = parsed["records"]
    if not isinstance(records, list):
        raise ApiError(
            400,
            "invalid_records",
            f"records must be a list, got {type(records).__name__}",
            "body.records",
        )
    if len(records) > max_records:
        raise ApiError(
            413,
            "too_many_records",
            f"{len(records)} records, at most {max_records} per request",
            "body.records",
        )
    return records


def create_app(
    kafka: KafkaSettings, settings: HttpSourceSettings, publisher: KafkaPublisher | None = None
) -> FastAPI:
    """The ingest API; it creates the qanat topics and its Kafka producer on start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
        app.state.publisher = publisher or KafkaPublisher(kafka, settings.delivery_timeout_s)
        try:
            yield
        finally:
            app.state.publisher.close()

    app = FastAPI(title="qanat ingest API", version="0.1.0", lifespan=lifespan)
    _install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/ingest/{vertical}/{type}/batch", status_code=202)
    async def ingest_batch(vertical: str, type: str, request: Request) -> dict[str, Any]:
        """Accept ``{"records": [...]}``; 202 once Kafka acknowledged every record."""
        vertical, type_ = _identifier("vertical", vertical), _identifier("type", type)
        _check_content_type(request)
        records = _parse_batch(
            await _read_body(request, settings.max_body_bytes), settings.max_records
        )
        values = [orjson.dumps(record) for record in records]
        ingestion_id, events = build_raw_events(values, vertical, type_, SOURCE_NAME, records)
        await request.app.state.publisher.publish(kafka.topics.raw, events)
        return {"ingestion_id": ingestion_id, "record_count": len(events)}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(RetriableError)
    async def unavailable(_request: Request, exc: RetriableError) -> Response:
        logger.warning("503: %s", exc)
        response = ApiError(
            503, "kafka_unavailable", "the records were not stored; retry later", None
        ).response()
        response.headers["Retry-After"] = str(int(exc.retry_after))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        details = [
            {"path": ".".join(map(str, err["loc"])), "message": err["msg"]} for err in exc.errors()
        ]
        return ApiError(400, "invalid_request", "the request is invalid", None, details).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return ApiError(exc.status_code, code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error")
        return ApiError(500, "internal_error", "an internal error occurred").response()
