"""The control plane's HTTP routes: the schema registry, and (from their modules) the
records reader (:mod:`pipelines.control.records`), ingestion tracking
(:mod:`pipelines.control.ingestions`) and live read (:mod:`pipelines.control.live`).

``PUT /api/v1/schemas/{vertical}/{type}`` registers a JSON Schema; ``GET`` the same path
reads the latest version, ``GET .../versions/{n}`` one version. With authentication on
(the HTTP source's API keys), registering needs a key with the ``admin`` scope on the
vertical (a schema decides what every producer of the vertical may send, so ingest keys,
``write``, may not change it), and reading needs the ``read`` scope on the vertical.

Errors use the body every qanat HTTP error has (:func:`error_response`).

>>> error_response(404, "schema_not_found", "no schema", "path").status_code
404
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.control.ingestions import IngestionErrors, IngestionLedger, ingestion_routes
from pipelines.control.live import LiveAuth, live_routes
from pipelines.control.records import RecordReader, records_routes
from pipelines.core.config import KafkaSettings
from pipelines.core.httperrors import bad_identifiers, error_response, json_response, responses
from pipelines.transform.registry import InvalidSchemaError, SchemaRegistry
from pipelines.transform.schematopic import RegistryUnavailableError, SchemaVersion

__all__ = ["control_router", "error_response"]

MAX_SCHEMA_BYTES = 1024 * 1024
LIVE_HEARTBEAT_S = 15.0
SCHEMA_VERSION_DOC: dict[str, Any] = {
    "type": "object",
    "required": ["vertical", "type", "version", "schema", "registered_at"],
}
REGISTERED_DOC: dict[str, Any] = {
    "type": "object",
    "required": ["vertical", "type", "version"],
    "properties": {
        "vertical": {"type": "string"},
        "type": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
    },
}


def control_router(
    kafka: KafkaSettings,
    registry: SchemaRegistry | None = None,
    *,
    records: RecordReader | None = None,
    errors: IngestionErrors | None = None,
    ledger: IngestionLedger | None = None,
    read_auth: Callable[..., Any] | None = None,
    admin_auth: Callable[..., Any] | None = None,
    authorize: Callable[[Any, str, str], None] | None = None,
    live_auth: LiveAuth | None = None,
    live_heartbeat_s: float = LIVE_HEARTBEAT_S,
) -> APIRouter:
    """The control plane's routes; the registry reads the schemas topic on first use and,
    unless passed in, is closed when the app shuts down.

    ``records`` (None: no reader routes), ``errors`` (None: no ingestion routes) and
    ``ledger`` (None: ``accepted`` is unknown) are closed with the app. ``read_auth`` is
    a FastAPI dependency guarding the schema reads, the reader and the ingestion routes
    (the HTTP source's ``Authenticator.require("read")``: the ``read`` scope on the path's
    ``vertical``; the ingestion routes, without one, get the key it returns);
    ``admin_auth`` guards schema registration (``require("admin")``); None: no
    authentication. ``authorize(key, "read", vertical)`` (``Authenticator.authorize``)
    raises unless the key may read the ingestion's vertical (from its summary, else its
    dead letters; an ingestion whose vertical is not known yet is a 404).
    ``live_auth(connection, "read", vertical)`` (``Authenticator.connection_key``) checks
    the live-read connections (:mod:`pipelines.control.live`); None: no authentication.
    """
    schemas = registry or SchemaRegistry(kafka)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        if registry is None:  # ours: close its consumer and producer with the app
            await run_in_threadpool(schemas.close)
        for store in (records, errors, ledger):
            if store is not None:
                await run_in_threadpool(store.close)

    router = APIRouter(prefix="/api/v1", tags=["control"], lifespan=lifespan)
    reader_deps = [Depends(read_auth)] if read_auth is not None else []
    admin_deps = [Depends(admin_auth)] if admin_auth is not None else []
    _schema_routes(router, schemas, reader_deps, admin_deps)
    if records is not None:
        records_routes(router, records, reader_deps)
    if errors is not None:
        ingestion_routes(router, errors, records, ledger, read_auth, authorize)
    live_routes(router, kafka, live_auth, live_heartbeat_s)
    return router


def _schema_routes(
    router: APIRouter, schemas: SchemaRegistry, reader_deps: list[Any], admin_deps: list[Any]
) -> None:
    @router.put(
        "/schemas/{vertical}/{type}",
        status_code=201,
        dependencies=admin_deps,
        responses=responses(
            {201: "Registered as a new version.", 200: "Same as the latest version."},
            400,
            401,
            403,
            413,
            503,
            schema=REGISTERED_DOC,
        ),
    )
    async def register_schema(vertical: str, type: str, request: Request) -> Response:
        """Register a JSON Schema (draft 2020-12): 201 with its new version, 200 when it
        is the same as the latest, 400 with every meta-schema error and its path. With
        API keys, it needs the ``admin`` scope on the vertical."""
        problem = bad_identifiers(vertical, type)
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
        return json_response(201 if created else 200, answer)

    read_docs = responses(
        {200: "The schema version."}, 400, 401, 403, 404, 503, schema=SCHEMA_VERSION_DOC
    )

    @router.get("/schemas/{vertical}/{type}", dependencies=reader_deps, responses=read_docs)
    async def latest_schema(vertical: str, type: str) -> Response:
        """The latest version: ``{vertical, type, version, schema, registered_at}``. With
        API keys, it needs the ``read`` scope on the vertical."""
        problem = bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        try:
            found = await run_in_threadpool(schemas.latest, vertical, type)
        except RegistryUnavailableError as exc:
            return _unavailable(exc)
        return _found(found, vertical, type, None)

    @router.get(
        "/schemas/{vertical}/{type}/versions/{version}",
        dependencies=reader_deps,
        responses=read_docs,
    )
    async def schema_version(vertical: str, type: str, version: str) -> Response:
        """One version of a schema."""
        problem = bad_identifiers(vertical, type)
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
    return (
        _not_found(vertical, type_, version)
        if found is None
        else json_response(200, found.to_json())
    )
