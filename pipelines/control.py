"""The control plane's HTTP routes: the schema registry (more to come: ingestions, DLQ).

Errors use the body every qanat HTTP error has (see the HTTP source):
``{"error": {"code": ..., "message": ..., "location": ..., "details": [...]}}``.
The core imports no connector, so the small helper that builds it lives here.

>>> error_response(404, "schema_not_found", "no schema", "path").status_code
404
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.config import KafkaSettings
from pipelines.records import check_identifier
from pipelines.registry import (
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaRegistry,
    SchemaVersion,
)

MAX_SCHEMA_BYTES = 1024 * 1024


def error_response(
    status: int,
    code: str,
    message: str,
    location: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    """The JSON error body of every qanat HTTP error."""
    body = {"code": code, "message": message, "location": location, "details": details or []}
    return Response(
        orjson.dumps({"error": body}), status_code=status, media_type="application/json"
    )


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _bad_identifiers(vertical: str, type_: str) -> Response | None:
    for kind, value in (("vertical", vertical), ("type", type_)):
        try:
            check_identifier(kind, value)
        except ValueError as exc:
            return error_response(400, f"invalid_{kind}", str(exc), f"path.{kind}")
    return None


def _unavailable(exc: RegistryUnavailableError) -> Response:
    response = error_response(503, "registry_unavailable", f"{exc}; retry later")
    response.headers["Retry-After"] = "1"
    return response


def _not_found(vertical: str, type_: str, version: int | None = None) -> Response:
    if version is None:
        return error_response(
            404, "schema_not_found", f"no schema registered for {vertical}/{type_}", "path"
        )
    return error_response(
        404,
        "version_not_found",
        f"{vertical}/{type_} has no version {version}",
        "path.version",
    )


def _found(found: SchemaVersion | None, vertical: str, type_: str, version: int | None) -> Response:
    return _not_found(vertical, type_, version) if found is None else _json(200, found.to_json())


def control_router(kafka: KafkaSettings, registry: SchemaRegistry | None = None) -> APIRouter:
    """The control plane's routes; the registry reads the schemas topic on first use and,
    unless passed in, is closed when the app shuts down."""
    schemas = registry or SchemaRegistry(kafka)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        if registry is None:  # ours: close its consumer and producer with the app
            await run_in_threadpool(schemas.close)

    router = APIRouter(prefix="/api/v1", tags=["control"], lifespan=lifespan)

    @router.put("/schemas/{vertical}/{type}", status_code=201)
    async def register_schema(vertical: str, type: str, request: Request) -> Response:
        """Register a JSON Schema (draft 2020-12): 201 with its new version, 200 when it
        is the same as the latest, 400 with every meta-schema error and its path."""
        problem = _bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        body = await request.body()
        if len(body) > MAX_SCHEMA_BYTES:
            return error_response(
                413, "body_too_large", f"the body is over {MAX_SCHEMA_BYTES} bytes", "body"
            )
        try:
            schema = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, "invalid_json", f"the body is not valid JSON: {exc}", "body")
        try:
            version, created = await run_in_threadpool(schemas.put, vertical, type, schema)
        except InvalidSchemaError as exc:
            return error_response(400, "invalid_schema", str(exc), "body", list(exc.errors))
        except RegistryUnavailableError as exc:
            return _unavailable(exc)
        answer = {"vertical": vertical, "type": type, "version": version}
        return _json(201 if created else 200, answer)

    @router.get("/schemas/{vertical}/{type}")
    async def latest_schema(vertical: str, type: str) -> Response:
        """The latest version: ``{vertical, type, version, schema, registered_at}``."""
        problem = _bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        try:
            found = await run_in_threadpool(schemas.latest, vertical, type)
        except RegistryUnavailableError as exc:
            return _unavailable(exc)
        return _found(found, vertical, type, None)

    @router.get("/schemas/{vertical}/{type}/versions/{version}")
    async def schema_version(vertical: str, type: str, version: str) -> Response:
        """One version of a schema."""
        problem = _bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        if not (version.isascii() and version.isdigit()) or int(version) < 1:
            return error_response(
                400, "invalid_version", "version must be a positive integer", "path.version"
            )
        try:
            found = await run_in_threadpool(schemas.get, vertical, type, int(version))
        except RegistryUnavailableError as exc:
            return _unavailable(exc)
        return _found(found, vertical, type, int(version))

    return router
