"""The control plane's records reader, and the paging every read route of it shares.

``GET /api/v1/records/{vertical}/{type}`` pages through the stored records in
``source_id`` order (an opaque ``cursor``; ``limit`` 1-1000, default 100; filters
``source_id`` and ``updated_since``, RFC 3339); ``GET /api/v1/records/{vertical}/{type}/
{source_id}`` reads one. The store is passed in (a :class:`RecordReader`): the control
plane imports no connector, the CLI wires them (:func:`pipelines.control.app.control_router`).
Ingestion tracking (:mod:`pipelines.control.ingestions`) pages its dead letters with the
same cursors and limits.

>>> decode_cursor(encode_cursor(["p", 1]))
['p', 1]
>>> parse_limit(None), parse_limit("1000")
(100, 1000)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.core.errors import RetriableError
from pipelines.core.httperrors import (
    bad_identifiers,
    error_response,
    json_response,
    responses,
)
from pipelines.core.records import parse_time

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


def parse_limit(value: str | None) -> int:
    """The ``limit`` query parameter: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent."""
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def store_unavailable(exc: RetriableError) -> Response:
    """503 ``store_unavailable``, with the ``Retry-After`` the store asked for."""
    response = error_response(503, "store_unavailable", f"{exc}; retry later")
    response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def _page(items: list[Any], limit: int, position: Callable[[Any], Any]) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` from up to ``limit + 1`` items (one more: a next page)."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(position(items[-1])) if more else None}


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
            size = parse_limit(limit)
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
            return store_unavailable(exc)
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
            return store_unavailable(exc)
        if found is None:
            message = f"no record {source_id!r} of {vertical}/{type}"
            return error_response(404, "record_not_found", message, "path.source_id")
        return json_response(200, found)
