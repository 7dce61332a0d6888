"""The DLQ over HTTP: list dead letters, replay them as background jobs.

* ``GET /api/v1/dlq`` - dead letters in (partition, offset) order, ``{items,
  next_cursor}``; each item as ``qanat dlq show --json`` prints it. Filters (query):
  ``vertical``, ``type``, ``stage``, ``reason`` (substring), ``header=name=value``
  (repeatable), ``ingestion_id``, ``since`` / ``until`` (RFC 3339 or ``7d``),
  ``partition`` (repeatable), ``from_offset``, ``to_offset``; ``limit`` 1-1000 (100).
* ``POST /api/v1/dlq/replay`` - a JSON body with the same filters (``headers`` an object,
  ``partitions`` a list) and ``max_replays`` (3), ``rate`` (messages/s), ``dry_run``,
  ``replay_id``: 202 ``{job_id, replay_id, status_url}``.
* ``GET /api/v1/dlq/replay/{job_id}`` - the job's state (running, done, stopped,
  failed), progress and, once finished, its summary.

Auth: ``read_auth`` / ``write_auth`` are the HTTP source's ``Authenticator.require``
dependencies; the routes check the scope themselves (no ``vertical`` in their paths):
listing needs ``read``, replaying ``write``, and a key limited to some verticals sees
and replays only those (and sees only the replay jobs over them). The scope, and a
vertical the request names, are checked before the rest of the request is validated.

>>> filter_from({"vertical": "shop", "headers": {"qanat.source": "http"}}).headers
(('qanat.source', 'http'),)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pipelines.control.app import error_response
from pipelines.core.config import KafkaSettings
from pipelines.core.errors import QanatError
from pipelines.dlq.filters import DlqFilter, parse_header_matches, parse_when
from pipelines.dlq.jobs import JobConflictError, ReplayJobs
from pipelines.dlq.read import DlqScanner
from pipelines.dlq.replay import ReplayOptions
from pipelines.dlq.state import DlqState

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
REPLAY_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_TEXT_FILTERS = ("vertical", "type", "stage", "reason", "ingestion_id")
_INT_FILTERS = ("from_offset", "to_offset")
_OPTIONS = ("max_replays", "rate", "dry_run", "replay_id")


class ScopedKey(Protocol):
    """What the routes need of an API key (``sources.http.auth.ApiKey``)."""

    scopes: frozenset[str]
    verticals: frozenset[str] | None

    def allows(self, scope: str, vertical: str) -> bool: ...


class BadRequestError(ValueError):
    def __init__(self, location: str, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.location, self.code = location, code


def _int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequestError(name, f"{name} must be an integer >= {minimum}")
    return value


def filter_from(values: Mapping[str, Any], where: str = "body") -> DlqFilter:
    """A DlqFilter from a query or a JSON body; BadRequestError names the bad field."""
    fields: dict[str, Any] = {}
    for name in _TEXT_FILTERS:
        if values.get(name) is not None:
            if not isinstance(values[name], str):
                raise BadRequestError(f"{where}.{name}", f"{name} must be a string")
            fields[name] = values[name]
    for name in _INT_FILTERS:
        if values.get(name) is not None:
            fields[name] = _int(f"{where}.{name}", values[name])
    for name in ("since", "until"):
        if values.get(name) is not None:
            try:
                fields[name] = parse_when(str(values[name]))
            except ValueError as exc:
                raise BadRequestError(f"{where}.{name}", str(exc)) from None
    headers = values.get("headers") or {}
    if isinstance(headers, list) and where == "query":  # header=name=value, repeated
        try:
            fields["headers"] = parse_header_matches(headers)
        except ValueError as exc:
            raise BadRequestError(f"{where}.header", str(exc)) from None
    elif isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()):
        fields["headers"] = tuple(sorted(headers.items()))
    else:
        raise BadRequestError(f"{where}.headers", "headers must be an object of strings")
    partitions = values.get("partitions")
    if partitions:
        if not isinstance(partitions, list):
            raise BadRequestError(f"{where}.partitions", "partitions must be a list")
        fields["partitions"] = tuple(_int(f"{where}.partitions", p) for p in partitions)
    return DlqFilter(**fields)


def _query_filter(request: Request) -> DlqFilter:
    query = request.query_params
    values: dict[str, Any] = {name: query.get(name) for name in (*_TEXT_FILTERS, *_INT_FILTERS)}
    values |= {"since": query.get("since"), "until": query.get("until")}
    values |= {"headers": query.getlist("header"), "partitions": query.getlist("partition")}
    return filter_from(values, "query")


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    limit = _int("query.limit", value, 1)
    if limit > MAX_LIMIT:
        raise BadRequestError("query.limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(partition: int, offset: int) -> str:
    """An opaque cursor: where the next page starts.

    >>> _cursor(encode_cursor(1, 42))
    (1, 42)
    """
    return base64.urlsafe_b64encode(orjson.dumps({"dlq": [partition, offset]})).decode()


def _cursor(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        after = orjson.loads(base64.urlsafe_b64decode(value.encode("ascii")))["dlq"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise BadRequestError("query.cursor", "not a cursor this route returned") from None
    if not (isinstance(after, list) and len(after) == 2 and all(type(v) is int for v in after)):
        raise BadRequestError("query.cursor", "not a cursor this route returned")
    return after[0], after[1]


def check_scope(key: ScopedKey | None, scope: str, vertical: Any = None) -> None:
    """PermissionError (a 403) unless ``key`` has ``scope`` on ``vertical`` (a string, as
    the client sent it; anything else: on some vertical). Called before the rest of the
    request is validated, so a key out of scope learns nothing more than that."""
    if key is None:
        return
    named = isinstance(vertical, str)
    if scope not in key.scopes or (named and not key.allows(scope, vertical)):
        what = f"vertical {vertical!r}" if named else "these dead letters"
        raise PermissionError(f"this API key may not {scope} {what}")


def scoped(wanted: DlqFilter, key: ScopedKey | None, scope: str) -> DlqFilter:
    """``wanted`` narrowed to what ``key`` may see; PermissionError (a 403) when nothing."""
    check_scope(key, scope, wanted.vertical)
    if key is None or key.verticals is None:
        return wanted
    return replace(wanted, verticals=tuple(sorted(key.verticals)))


def _sees(key: ScopedKey | None, wanted: DlqFilter) -> bool:
    """Whether ``key`` may see a job over ``wanted``: every vertical it covers is the key's."""
    if key is None or key.verticals is None:
        return True
    covers = wanted.verticals if wanted.vertical is None else (wanted.vertical,)
    return covers is not None and set(covers) <= key.verticals


def dlq_page(
    kafka: KafkaSettings, wanted: DlqFilter, after: tuple[int, int] | None, limit: int
) -> dict[str, Any]:
    """One page: up to ``limit`` items from position ``after`` on, and the next cursor."""
    state = DlqState.load(kafka)
    items: list[dict[str, Any]] = []
    with DlqScanner(kafka) as scanner:
        ranges = scanner.ranges(wanted)
        if after is not None:
            ranges = {
                p: range(max(r.start, after[1]) if p == after[0] else r.start, r.stop)
                for p, r in ranges.items()
                if p >= after[0]
            }
        for letter in scanner.scan({p: r for p, r in ranges.items() if len(r)}):
            if not wanted.matches(letter) or state.is_purged(letter):
                continue
            if len(items) == limit:
                return {
                    "items": items,
                    "next_cursor": encode_cursor(letter.partition, letter.offset),
                }
            items.append(letter.full())
    return {"items": items, "next_cursor": None}


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _no_key() -> None:
    return None


async def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        message = f"the body is not valid JSON: {exc}"
        raise BadRequestError("body", message, "invalid_json") from None


def _replay_options(body: Any, key: ScopedKey | None) -> ReplayOptions:
    if not isinstance(body, dict):
        raise BadRequestError("body", "the body must be a JSON object")
    check_scope(key, "write", body.get("vertical"))
    known = {*_TEXT_FILTERS, *_INT_FILTERS, "since", "until", "headers", "partitions", *_OPTIONS}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequestError(f"body.{unknown[0]}", f"unknown field {unknown[0]!r}")
    wanted = scoped(filter_from(body), key, "write")
    rate = body.get("rate")
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0
    ):
        raise BadRequestError("body.rate", "rate must be a positive number (messages/s)")
    if not isinstance(body.get("dry_run", False), bool):
        raise BadRequestError("body.dry_run", "dry_run must be true or false")
    replay_id = body.get("replay_id")
    if replay_id is not None and not (
        isinstance(replay_id, str) and REPLAY_ID.fullmatch(replay_id)
    ):
        raise BadRequestError("body.replay_id", f"replay_id must match {REPLAY_ID.pattern}")
    max_replays = _int("body.max_replays", body.get("max_replays", 3))
    return ReplayOptions(wanted, max_replays, rate, bool(body.get("dry_run", False)), replay_id)


def dlq_router(
    kafka: KafkaSettings,
    *,
    read_auth: Callable[..., Any] | None = None,
    write_auth: Callable[..., Any] | None = None,
    jobs: ReplayJobs | None = None,
) -> APIRouter:
    """The DLQ routes; replay jobs (``jobs``, default: new ones) stop with the app."""
    replays = jobs or ReplayJobs(kafka)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(replays.close)

    router = APIRouter(prefix="/api/v1", tags=["dlq"], lifespan=lifespan)
    reader, writer = Depends(read_auth or _no_key), Depends(write_auth or _no_key)

    @router.get("/dlq")
    async def list_dead_letters(
        request: Request, cursor: str | None = None, limit: str | None = None, key: Any = reader
    ) -> Response:
        """Dead letters in (partition, offset) order: ``{items, next_cursor}``; pass
        ``next_cursor`` back as ``cursor`` for the next page (null: the last page)."""
        try:
            check_scope(key, "read", request.query_params.get("vertical"))
            wanted = scoped(_query_filter(request), key, "read")
            page = await run_in_threadpool(dlq_page, kafka, wanted, _cursor(cursor), _limit(limit))
        except BadRequestError as exc:
            return error_response(400, "invalid_request", str(exc), exc.location)
        except PermissionError as exc:
            return error_response(403, "forbidden", str(exc), "header.authorization")
        except QanatError as exc:
            return _unavailable(exc)
        return _json(200, page)

    @router.post("/dlq/replay", status_code=202)
    async def replay_dead_letters(request: Request, key: Any = writer) -> Response:
        """Start a replay (or a dry run) in the background: 202 ``{job_id, replay_id,
        status_url}``; 409 while the same replay runs."""
        try:
            check_scope(key, "write")  # before the body: its vertical is checked in it
            job = replays.start(_replay_options(await _json_body(request), key))
        except BadRequestError as exc:
            return error_response(400, exc.code, str(exc), exc.location)
        except PermissionError as exc:
            return error_response(403, "forbidden", str(exc), "header.authorization")
        except JobConflictError as exc:
            return error_response(409, "replay_running", str(exc), "body.replay_id")
        answer = {"job_id": job.id, "replay_id": job.options.id}
        return _json(202, answer | {"status_url": f"/api/v1/dlq/replay/{job.id}"})

    @router.get("/dlq/replay/{job_id}")
    async def replay_job(job_id: str, key: Any = reader) -> Response:
        """A replay job: ``state`` (running, done, stopped, failed), ``examined`` of
        ``total`` dead letters, and its ``summary`` once finished."""
        try:
            check_scope(key, "read")
        except PermissionError as exc:
            return error_response(403, "forbidden", str(exc), "header.authorization")
        job = replays.get(job_id)
        if job is None:
            return error_response(404, "job_not_found", f"no replay job {job_id!r}", "path.job_id")
        if not _sees(key, job.options.filter):
            message = "this API key may not read this replay job: it covers other verticals"
            return error_response(403, "forbidden", message, "header.authorization")
        return _json(200, job.to_json())

    return router


def _unavailable(exc: QanatError) -> Response:
    response = error_response(503, "kafka_unavailable", f"{exc}; retry later")
    response.headers["Retry-After"] = "1"
    return response
