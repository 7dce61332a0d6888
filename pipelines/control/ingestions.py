"""The control plane's ingestion tracking: what became of an ingestion, and its errors.

``GET /api/v1/ingestions/{id}`` counts what became of an ingestion (:func:`ingestion_status`:
accepted, invalid, valid, stored, handled, processing or complete) and
``GET /api/v1/ingestions/{id}/errors`` pages through its dead letters. The stores are
passed in (an :class:`IngestionErrors`, an :class:`IngestionLedger`, the
:class:`pipelines.control.records.RecordReader`): the control plane imports no connector,
the CLI wires them (:func:`pipelines.control.app.control_router`). With authentication
on, a key reads an ingestion only with the ``read`` scope on its vertical.

>>> ingestion_status("i", None, {"invalid": 0}, stored=0)["status"]
'processing'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.control.records import (
    PAGE,
    RecordReader,
    decode_cursor,
    encode_cursor,
    parse_limit,
    store_unavailable,
)
from pipelines.core.errors import RetriableError
from pipelines.core.httperrors import error_response, json_response, responses
from pipelines.core.records import MAX_INGESTION_ID, valid_ingestion_id

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


class IngestionErrors(Protocol):
    """The errors table's reader (``sinks.errorstore.ErrorStore``)."""

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
            return store_unavailable(exc)
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
            return store_unavailable(exc)
        try:
            size = parse_limit(limit)
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
            return store_unavailable(exc)
        more = len(found) > size
        page = {
            "items": found[:size],
            "next_cursor": encode_cursor(offset + size) if more else None,
        }
        return json_response(200, page)
