"""The control plane's read routes: the records reader and ingestion tracking.

``GET /api/v1/records/{vertical}/{type}`` pages through the stored records in
``source_id`` order (an opaque ``cursor``; ``limit`` 1-1000, default 100; filters
``source_id`` and ``updated_since``, RFC 3339); ``GET /api/v1/records/{vertical}/{type}/
{source_id}`` reads one. ``GET /api/v1/ingestions/{id}`` counts what became of an
ingestion and ``GET /api/v1/ingestions/{id}/errors`` lists its dead letters. The stores
are passed in (a :class:`RecordReader`, an :class:`IngestionErrors`): the core imports
no connector, the CLI wires them (:func:`pipelines.control.app.control_router`).

>>> decode_cursor(encode_cursor(["p", 1]))
['p', 1]
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.core.errors import RetriableError
from pipelines.core.httperrors import (
    bad_identifiers,
    error_response,
    json_response,
    responses,
)
from pipelines.core.records import MAX_INGESTION_ID, parse_time, valid_ingestion_id

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
RECORD: dict[str, Any] = {"type": "object", "required": list(RECORD_FIELDS)}
PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"]},
    },
}

_COUNT = {"type": "integer", "minimum": 0}
INGESTION: dict[str, Any] = {
    "type": "object",
    "required": [
        "ingestion_id",
        "accepted",
        "invalid",
        "valid",
        "stored",
        "handled",
        "status",
        "invalid_by_stage",
    ],
    "properties": {
        "ingestion_id": {"type": "string"},
        "accepted": {"type": ["integer", "null"], "minimum": 0},
        "invalid": _COUNT,
        "valid": {"type": ["integer", "null"], "minimum": 0},
        "stored": _COUNT,
        "handled": _COUNT,
        "status": {"type": "string", "enum": ["processing", "complete"]},
        "invalid_by_stage": {"type": "object", "additionalProperties": _COUNT},
    },
}
"""The answer of ``GET /ingestions/{id}`` (:func:`ingestion_status`)."""


class RecordReader(Protocol):
    """Reads the datastore's table of current state (:mod:`sinks.sqlite.reader`,
    :mod:`sinks.postgres.reader`); RetriableError when the database is unavailable."""

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

    def handled_ingestion(self, ingestion_id: str) -> int:
        """Records of ``ingestion_id`` the sink upserted or found superseded by a newer
        version (0 while the store has no progress table)."""
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
    ingestion_id: str, accepted: int | None, counts: dict[str, Any], stored: int, handled: int = 0
) -> dict[str, Any]:
    """The answer of ``GET /ingestions/{id}``.

    ``accepted`` is None until the ingestion's summary is stored (the errors sink stores
    it from the ingestions topic); then ``valid`` is unknown too and it is processing.
    ``valid`` = accepted - invalid. ``stored`` counts the rows that carry the ingestion id
    now (a later ingestion updating a row takes it away), ``handled`` the records the sink
    upserted or found superseded by a newer version: complete once invalid + handled reach
    accepted (with a store that does not count ``handled`` yet, invalid + stored).

    >>> ingestion_status("i", 3, {"invalid": 1, "by_stage": {"validate": 1}}, 2)["status"]
    'complete'
    >>> answer = ingestion_status("i", 4, {"invalid": 1}, stored=0, handled=3)
    >>> answer["status"], answer["stored"], answer["handled"]
    ('complete', 0, 3)
    """
    invalid = int(counts.get("invalid", 0))
    if accepted is None:
        valid, status = None, "processing"
    else:
        valid = max(accepted - invalid, 0)
        status = "complete" if invalid + max(handled, stored) >= accepted else "processing"
    return {
        "ingestion_id": ingestion_id,
        "accepted": accepted,
        "invalid": invalid,
        "valid": valid,
        "stored": stored,
        "handled": handled,
        "status": status,
        "invalid_by_stage": counts.get("by_stage", {}),
    }


def records_routes(router: APIRouter, records: RecordReader, deps: list[Any]) -> None:
    @router.get(
        "/records/{vertical}/{type}",
        dependencies=deps,
        tags=["records"],
        responses=responses({200: "A page of records."}, 400, 401, 403, 503, schema=PAGE),
    )
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
        problem = bad_identifiers(vertical, type)
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
        return json_response(200, _page(found, size, lambda item: item["source_id"]))

    @router.get(
        "/records/{vertical}/{type}/{source_id}",
        dependencies=deps,
        tags=["records"],
        responses=responses({200: "The record."}, 400, 401, 403, 404, 503, schema=RECORD),
    )
    async def get_record(vertical: str, type: str, source_id: str) -> Response:
        """One stored record; 404 when there is none."""
        problem = bad_identifiers(vertical, type)
        if problem is not None:
            return problem
        try:
            found = await run_in_threadpool(records.get, vertical, type, source_id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        if found is None:
            message = f"no record {source_id!r} of {vertical}/{type}"
            return error_response(404, "record_not_found", message, "path.source_id")
        return json_response(200, found)


def _no_key() -> None:
    """The request's key when the routes have no authentication."""
    return None


def ingestion_routes(
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

    def handled_records(ingestion_id: str) -> int:
        return 0 if records is None else records.handled_ingestion(ingestion_id)

    def accepted(ingestion_id: str) -> int | None:
        summary = None if ledger is None else ledger.summary(ingestion_id)
        return None if summary is None else int(summary["accepted"])

    def unknown(ingestion_id: str) -> Response:
        message = f"nothing is known about ingestion {ingestion_id!r} (yet)"
        return error_response(404, "ingestion_not_found", message, "path.id")

    def bad_id(ingestion_id: str) -> Response | None:
        if valid_ingestion_id(ingestion_id):
            return None
        message = f"an ingestion id has 1 to {MAX_INGESTION_ID} printable characters"
        return error_response(400, "invalid_ingestion_id", message, "path.id")

    @router.get(
        "/ingestions/{id}",
        tags=["ingestions"],
        responses=responses(
            {200: "What became of the ingestion."}, 400, 401, 403, 404, 503, schema=INGESTION
        ),
    )
    async def ingestion(id: str, key: Any = request_key) -> Response:
        """``{ingestion_id, accepted, invalid, valid, stored, handled, status,
        invalid_by_stage}``: ``invalid`` counts its dead letters (a replayed event once),
        ``stored`` the rows whose latest version it wrote (a later ingestion updating a row
        takes it away), ``handled`` its records the sink upserted or found superseded by a
        newer version; ``complete`` once invalid + handled reach accepted."""
        problem = bad_id(id)
        if problem is not None:
            return problem
        try:
            if not await run_in_threadpool(allowed, key, id):
                return unknown(id)
            total = await run_in_threadpool(accepted, id)
            counts = await run_in_threadpool(errors.counts, id)
            stored = await run_in_threadpool(stored_rows, id)
            handled = await run_in_threadpool(handled_records, id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        if total is None and not counts.get("dead_letters") and not stored and not handled:
            return unknown(id)
        return json_response(200, ingestion_status(id, total, counts, stored, handled))

    @router.get(
        "/ingestions/{id}/errors",
        tags=["ingestions"],
        responses=responses({200: "A page of dead letters."}, 400, 401, 403, 404, 503, schema=PAGE),
    )
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
            if not await run_in_threadpool(allowed, key, id):  # the key first, then the query
                return unknown(id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        try:
            size = _limit(limit)
            offset = 0 if cursor is None else decode_cursor(cursor)
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError("not a cursor of this route")
        except ValueError as exc:
            where = "query.limit" if "limit" in str(exc) else "query.cursor"
            return error_response(400, f"invalid_{where[6:]}", str(exc), where)
        try:
            found = await run_in_threadpool(errors.errors, id, size + 1, offset)
            if not found and offset == 0:
                known = await run_in_threadpool(accepted, id) is not None
                known = known or await run_in_threadpool(stored_rows, id) > 0
                known = known or await run_in_threadpool(handled_records, id) > 0
                if not known:
                    return unknown(id)
        except RetriableError as exc:
            return _store_unavailable(exc)
        more = len(found) > size
        page = {
            "items": found[:size],
            "next_cursor": encode_cursor(offset + size) if more else None,
        }
        return json_response(200, page)
