"""The control plane's HTTP routes: the schema registry, the records reader, ingestions.

``GET /api/v1/records/{vertical}/{type}`` pages through the stored records in
``source_id`` order (an opaque ``cursor``; ``limit`` 1-1000, default 100; filters
``source_id`` and ``updated_since``, RFC 3339); ``GET /api/v1/records/{vertical}/{type}/
{source_id}`` reads one. ``GET /api/v1/ingestions/{id}`` counts what became of an
ingestion and ``GET /api/v1/ingestions/{id}/errors`` lists its dead letters. The stores
are passed in (a :class:`RecordReader`, an :class:`IngestionErrors`): the core imports
no connector, the CLI wires them.

Errors use the body every qanat HTTP error has (see the HTTP source):
``{"error": {"code": ..., "message": ..., "location": ..., "details": [...]}}``.
The core imports no connector, so the small helper that builds it lives here.

>>> error_response(404, "schema_not_found", "no schema", "path").status_code
404
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.config import KafkaSettings
from pipelines.errors import RetriableError
from pipelines.records import check_identifier, parse_time
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


# --- the records reader and ingestion tracking ---------------------------------------

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RECORD_FIELDS = (
    "vertical",
    "type",
    "source_id",
    "name",
    "vertical_data",
    "source",
    "ingestion_id",
    "event_time",
    "updated_at",
    "schema_version",
)
"""The keys of every record the reader answers with (times are RFC 3339 UTC text)."""


class RecordReader(Protocol):
    """Reads the datastore's table of current state (:mod:`sinks.read_sqlite`,
    :mod:`sinks.read_postgres`); RetriableError when the database is unavailable."""

    def page(
        self,
        vertical: str,
        type_: str,
        *,
        after: str | None,
        limit: int,
        source_id: str | None = None,
        updated_since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` records with ``source_id`` > ``after``, in source_id order."""
        ...

    def get(self, vertical: str, type_: str, source_id: str) -> dict[str, Any] | None: ...

    def count_ingestion(self, ingestion_id: str) -> int:
        """Rows whose latest version came from ``ingestion_id``."""
        ...

    def close(self) -> None: ...


class IngestionErrors(Protocol):
    """The errors table's reader (``sinks.errors.ErrorStore``)."""

    def counts(self, ingestion_id: str) -> dict[str, Any]: ...

    def errors(
        self, ingestion_id: str, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class IngestionLedger(Protocol):
    """The ingestions table's reader (``sinks.ingestions``): the summary the source wrote
    once Kafka acknowledged an ingestion's events, with its ``accepted`` count."""

    def summary(self, ingestion_id: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def encode_cursor(position: Any) -> str:
    """An opaque cursor for ``position`` (any JSON value).

    >>> decode_cursor(encode_cursor("p1"))
    'p1'
    """
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """The position in ``cursor``; ValueError when it is not one of ours."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a cursor this API returned") from exc
    if not isinstance(decoded, dict) or "after" not in decoded:
        raise ValueError("not a cursor this API returned")
    return decoded["after"]


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _store_unavailable(exc: RetriableError) -> Response:
    response = error_response(503, "store_unavailable", f"{exc}; retry later")
    response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def _page(items: list[Any], limit: int, position: Callable[[Any], Any]) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from up to ``limit + 1`` items (one more: a next page)."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(position(items[-1])) if more else None}


def ingestion_status(
    ingestion_id: str, accepted: int | None, counts: dict[str, Any], stored: int
) -> dict[str, Any]:
    """The answer of ``GET /ingestions/{id}``.

    ``accepted`` is None until the ingestion's summary is stored (the errors sink stores
    it from the ingestions topic); then ``valid`` is unknown too and it is processing.
    ``valid`` = accepted - invalid; complete once invalid + stored reach accepted.

    >>> ingestion_status("i", 3, {"invalid": 1, "by_stage": {"validate": 1}}, 2)["status"]
    'complete'
    """
    invalid = int(counts.get("invalid", 0))
    if accepted is None:
        valid, status = None, "processing"
    else:
        valid = max(accepted - invalid, 0)
        status = "complete" if invalid + stored >= accepted else "processing"
    return {
        "ingestion_id": ingestion_id,
        "accepted": accepted,
        "invalid": invalid,
        "valid": valid,
        "stored": stored,
        "status": status,
        "invalid_by_stage": counts.get("by_stage", {}),
    }


def control_router(
    kafka: KafkaSettings,
    registry: SchemaRegistry | None = None,
    *,
    records: RecordReader | None = None,
    errors: IngestionErrors | None = None,
    ledger: IngestionLedger | None = None,
    read_auth: Callable[..., Any] | None = None,
    authorize: Callable[[Any, str, str], None] | None = None,
) -> APIRouter:
    """The control plane's routes; the registry reads the schemas topic on first use and,
    unless passed in, is closed when the app shuts down.

    ``records`` (None: no reader routes), ``errors`` (None: no ingestion routes) and
    ``ledger`` (None: ``accepted`` is unknown) are closed with the app. ``read_auth`` is
    a FastAPI dependency guarding the reader and ingestion routes (the HTTP source's
    ``Authenticator.require("read")``: the ``read`` scope on the path's ``vertical``; the
    ingestion routes, without one, get the key it returns); None: no authentication.
    ``authorize(key, "read", vertical)`` (``Authenticator.authorize``) raises unless the
    key may read the ingestion's vertical (from its summary, else its dead letters; an
    ingestion whose vertical is not known yet is a 404).
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

    reader_deps = [Depends(read_auth)] if read_auth is not None else []
    if records is not None:
        _records_routes(router, records, reader_deps)
    if errors is not None:
        _ingestion_routes(router, errors, records, ledger, read_auth, authorize)
    return router


def _records_routes(router: APIRouter, records: RecordReader, deps: list[Any]) -> None:
    @router.get("/records/{vertical}/{type}", dependencies=deps, tags=["records"])
    async def list_records(
        vertical: str,
        type: str,
        cursor: str | None = None,
        limit: str | None = None,
        source_id: str | None = None,
        updated_since: str | None = None,
    ) -> Response:
        """Stored records in ``source_id`` order: ``{items, next_cursor}``; pass
        ``next_cursor`` back as ``cursor`` for the next page (null: the last page).
        ``limit`` 1-1000 (default 100); ``updated_since``: RFC 3339, records stored at or
        after it; ``source_id``: only that record."""
        problem = _bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        try:
            size = _limit(limit)
        except ValueError as exc:
            return error_response(400, "invalid_limit", str(exc), "query.limit")
        after = None
        if cursor is not None:
            try:
                after = decode_cursor(cursor)
            except ValueError as exc:
                return error_response(400, "invalid_cursor", str(exc), "query.cursor")
            if not isinstance(after, str):
                return error_response(
                    400, "invalid_cursor", "not a cursor of this route", "query.cursor"
                )
        since = None
        if updated_since is not None:
            try:
                since = parse_time(updated_since)
            except (ValueError, OverflowError) as exc:
                message = f"updated_since must be an RFC 3339 time: {exc}"
                return error_response(400, "invalid_time", message, "query.updated_since")
        try:
            found = await run_in_threadpool(
                lambda: records.page(
                    vertical,
                    type,
                    after=after,
                    limit=size + 1,
                    source_id=source_id,
                    updated_since=since,
                )
            )
        except RetriableError as exc:
            return _store_unavailable(exc)
        return _json(200, _page(found, size, lambda item: item["source_id"]))

    @router.get("/records/{vertical}/{type}/{source_id}", dependencies=deps, tags=["records"])
    async def get_record(vertical: str, type: str, source_id: str) -> Response:
        """One stored record; 404 when there is none."""
        problem = _bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        try:
            found = await run_in_threadpool(records.get, vertical, type, source_id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        if found is None:
            message = f"no record {source_id!r} of {vertical}/{type}"
            return error_response(404, "record_not_found", message, "path.source_id")
        return _json(200, found)


MAX_INGESTION_ID = 128


def _no_key() -> None:
    """The request's key when the routes have no authentication."""
    return None


def _ingestion_routes(
    router: APIRouter,
    errors: IngestionErrors,
    records: RecordReader | None,
    ledger: IngestionLedger | None,
    read_auth: Callable[..., Any] | None,
    authorize: Callable[[Any, str, str], None] | None,
) -> None:
    request_key = Depends(read_auth or _no_key)

    def vertical_of(ingestion_id: str) -> str | None:
        summary = None if ledger is None else ledger.summary(ingestion_id)
        if summary is not None and isinstance(summary.get("vertical"), str):
            return str(summary["vertical"])
        first = errors.errors(ingestion_id, 1, 0)
        return first[0].get("vertical") if first else None

    def allowed(key: Any, ingestion_id: str) -> bool:
        """False when the ingestion's vertical is not known yet; raises when ``key`` may
        not read it (``authorize``'s 403)."""
        if authorize is None or key is None:
            return True
        vertical = vertical_of(ingestion_id)
        if vertical is None:
            return False
        authorize(key, "read", vertical)
        return True

    def stored_rows(ingestion_id: str) -> int:
        return 0 if records is None else records.count_ingestion(ingestion_id)

    def accepted(ingestion_id: str) -> int | None:
        summary = None if ledger is None else ledger.summary(ingestion_id)
        return None if summary is None else int(summary["accepted"])

    def unknown(ingestion_id: str) -> Response:
        message = f"nothing is known about ingestion {ingestion_id!r} (yet)"
        return error_response(404, "ingestion_not_found", message, "path.id")

    def bad_id(ingestion_id: str) -> Response | None:
        if 0 < len(ingestion_id) <= MAX_INGESTION_ID and ingestion_id.isprintable():
            return None
        message = f"an ingestion id has 1 to {MAX_INGESTION_ID} printable characters"
        return error_response(400, "invalid_ingestion_id", message, "path.id")

    @router.get("/ingestions/{id}", tags=["ingestions"])
    async def ingestion(id: str, key: Any = request_key) -> Response:
        """``{ingestion_id, accepted, invalid, valid, stored, status, invalid_by_stage}``:
        ``invalid`` counts its dead letters (a replayed event once), ``stored`` the rows
        whose latest version it wrote (a later ingestion updating a row takes it away)."""
        problem = bad_id(id)
        if problem is not None:
            return problem
        try:
            if not await run_in_threadpool(allowed, key, id):
                return unknown(id)
            total = await run_in_threadpool(accepted, id)
            counts = await run_in_threadpool(errors.counts, id)
            stored = await run_in_threadpool(stored_rows, id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        if total is None and not counts.get("dead_letters") and not stored:
            return unknown(id)
        return _json(200, ingestion_status(id, total, counts, stored))

    @router.get("/ingestions/{id}/errors", tags=["ingestions"])
    async def ingestion_errors(
        id: str, cursor: str | None = None, limit: str | None = None, key: Any = request_key
    ) -> Response:
        """The ingestion's dead letters, oldest first: ``{items, next_cursor}``; each with
        its ``stage``, ``reason``, ``details`` (every error with its JSON ``path``) and
        the raw ``payload``."""
        problem = bad_id(id)
        if problem is not None:
            return problem
        try:
            size = _limit(limit)
            offset = 0 if cursor is None else decode_cursor(cursor)
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError("not a cursor of this route")
        except ValueError as exc:
            where = "query.limit" if "limit" in str(exc) else "query.cursor"
            return error_response(400, f"invalid_{where[6:]}", str(exc), where)
        try:
            if not await run_in_threadpool(allowed, key, id):
                return unknown(id)
            found = await run_in_threadpool(errors.errors, id, size + 1, offset)
            if not found and offset == 0:
                known = await run_in_threadpool(accepted, id) is not None
                known = known or await run_in_threadpool(stored_rows, id) > 0
                if not known:
                    return unknown(id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        more = len(found) > size
        page = {
            "items": found[:size],
            "next_cursor": encode_cursor(offset + size) if more else None,
        }
        return _json(200, page)
