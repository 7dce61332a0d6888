"""Reading and checking an HTTP ingest request: its path identifiers, body size, content
type and JSON shape; every problem is an :class:`ApiError` saying what and where."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from pipelines.records import check_identifier
from sources.http_errors import ApiError
from sources.http_stream import NDJSON_TYPES

JSON_TYPES = ("application/json", "text/json")
BATCH_KEYS = ("records", "items")


def identifier(kind: str, value: str) -> str:
    try:
        return check_identifier(kind, value)
    except ValueError as exc:
        raise ApiError(400, f"invalid_{kind}", str(exc), f"path.{kind}") from None


async def read_body(request: Request, limit: int) -> bytes:
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


def media_type(request: Request, default: str) -> str:
    return request.headers.get("content-type", default).split(";", 1)[0].strip().lower()


def check_content_type(request: Request) -> None:
    media = media_type(request, "application/json")
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected application/json, got {media!r}",
            "header.content-type",
        )


def check_stream_content_type(request: Request) -> None:
    media = media_type(request, "")
    if media not in NDJSON_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected {' or '.join(NDJSON_TYPES)}, got {media or 'no content type'!r}",
            "header.content-type",
        )


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", "body") from None


def parse_batch(body: bytes, max_records: int) -> list[Any]:
    parsed = parse_json(body)
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


def parse_object(body: bytes) -> dict[str, Any]:
    parsed = parse_json(body)
    if not isinstance(parsed, dict):
        raise ApiError(
            422, "invalid_body", f"expected an object, got {type(parsed).__name__}", "body"
        )
    return parsed


def body_identifier(item: dict[str, Any], field: str, kind: str) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise ApiError(422, f"invalid_{kind}", f"{field} {problem}", f"body.{field}")
    try:
        return check_identifier(kind, value)
    except ValueError as exc:
        raise ApiError(422, f"invalid_{kind}", str(exc), f"body.{field}") from None
