"""The HTTP source's error body: every error a client can cause is a 4xx saying what and where.

``{"error": {"code": ..., "message": ..., "location": ..., "details": [...]}}``; a few
errors add fields (a failed stream says how far it got).

>>> ApiError(422, "invalid_body", "expected an object", "body").response().status_code
422
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.core.errors import RetriableError
from sources.publisher import QueueFullError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A client-facing error, rendered as the JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        location: str | None = None,
        details: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.location, self.details = location, details or []
        self.extra = extra or {}
        self.retry_after = retry_after
        self.headers = headers or {}

    def response(self) -> Response:
        body = {
            "code": self.code,
            "message": self.message,
            "location": self.location,
            "details": self.details,
            **self.extra,
        }
        response = Response(
            orjson.dumps({"error": body}), status_code=self.status, media_type="application/json"
        )
        response.headers.update(self.headers)
        if self.retry_after is not None:
            response.headers["Retry-After"] = retry_after_header(self.retry_after)
        return response

    def message_body(self) -> dict[str, Any]:
        """The error as a WebSocket message: the JSON error body, with ``retry_after``."""
        body: dict[str, Any] = orjson.loads(self.response().body)
        if self.retry_after is not None:
            body["retry_after"] = int(retry_after_header(self.retry_after))
        return body


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def kafka_unavailable(exc: RetriableError, extra: dict[str, Any] | None = None) -> ApiError:
    """The 503 for data Kafka did not acknowledge: the client must retry it; the 429 when
    the producer's local queue is full (:class:`sources.publisher.QueueFullError`)."""
    if isinstance(exc, QueueFullError):
        return ApiError(
            429,
            "queue_full",
            "the service's Kafka producer queue is full; the records were not stored, retry later",
            None,
            extra=extra,
            retry_after=exc.retry_after,
        )
    return ApiError(
        503,
        "kafka_unavailable",
        "the records were not stored; retry later",
        None,
        extra=extra,
        retry_after=exc.retry_after,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, including FastAPI's and Starlette's own, as the JSON error body."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(RetriableError)
    async def unavailable(_request: Request, exc: RetriableError) -> Response:
        logger.warning("Kafka: %s", exc)
        return kafka_unavailable(exc).response()

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

    @app.exception_handler(RecursionError)
    async def too_deep(_request: Request, _exc: RecursionError) -> Response:
        # The JSON decoders recurse once per level of nesting; the routes scan for depth
        # before they decode (sources.http.jsoncheck), so this is a safety net.
        error = ApiError(400, "too_deep", "the body is nested too deeply", "body")
        return error.response()

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error")
        return ApiError(500, "internal_error", "an internal error occurred").response()
