"""Reading and checking an HTTP ingest request: its path identifiers, body size, content
type and JSON shape; every problem is an :class:`ApiError` saying what and where.

A batch (or an array) is split into the exact bytes of each record, counted before any
is decoded (msgspec's ``Raw``): each record is published as the client sent it. Then the
body is checked for what its decoders would let through (:mod:`sources.http.jsoncheck`: too
deep, a key twice), which decodes it once, and yields each record's ``source_id`` and
``idempotency_key`` (its key).

>>> values, keys, where = parse_batch(b'{"records": [{"source_id": "p1", "n": [1]}, 7]}', 10)
>>> values, where
([b'{"source_id": "p1", "n": [1]}', b'7'], 'body.records')
>>> keys
[{'source_id': 'p1', 'idempotency_key': None}, None]
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, NamedTuple

import msgspec
import orjson
from fastapi import Request

from pipelines.core.records import MAX_NESTING_DEPTH, check_identifier
from sources.http.errors import ApiError
from sources.http.jsoncheck import (
    Shape,
    check_depth,
    check_unique,
    decode_unique,
    split_array,
    too_deep_error,
    too_deep_path,
)
from sources.http.stream import NDJSON_TYPES
from sources.http.values import check_values, diagnose

JSON_TYPES = ("application/json", "text/json")
BATCH_KEYS = ("records", "items")
BATCH_LEVELS = 2
"""How deep a batch's records are in its body (``{"records": [here]}``)."""


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
    """The body's value (a record: nested at most MAX_NESTING_DEPTH deep, each key once
    in an object: :mod:`sources.http.jsoncheck`); 400 ``invalid_json``, or ``invalid_utf8`` /
    ``number_out_of_range`` (:mod:`sources.http.values`) naming the field."""
    check_depth(body, "body")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = diagnose(body)
        raise invalid_json(exc) if problem is None else problem.error("body") from None
    check_unique(body, "body", parsed)
    return parsed


class _Keys(msgspec.Struct):
    """What the record key is made of (:func:`pipelines.core.records.client_source_id`)."""

    source_id: Any = None
    idempotency_key: Any = None


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_KEYS = msgspec.json.Decoder(_Keys)
Keys = dict[str, Any] | None
"""A record's key fields (None: the record is not an object)."""


def record_keys(raw: msgspec.Raw | bytes) -> Keys:
    try:
        keys = _KEYS.decode(raw)
    except msgspec.ValidationError:
        return None
    return {"source_id": keys.source_id, "idempotency_key": keys.idempotency_key}


def keys_of(record: Any) -> Keys:
    """:func:`record_keys` of a record already decoded."""
    if not isinstance(record, dict):
        return None
    return {"source_id": record.get("source_id"), "idempotency_key": record.get("idempotency_key")}


class Records(NamedTuple):
    """The records of a request: each one's exact bytes and key fields, and the location
    of the array they came from (None: the body is the one record)."""

    values: list[bytes]
    keys: list[Keys]
    where: str | None


def invalid_json(exc: Exception) -> ApiError:
    return ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", "body")


def checked_records(
    body: bytes, values: list[bytes], location: str, levels_above: int, field: str | None
) -> Records:
    """``values`` (the elements of the array at ``location``, ``levels_above`` levels
    deep in ``body``, in its ``field``, if not at its top) and their key fields, once
    they are found no deeper than the limit, with each key once per object and every
    value decodable (400 otherwise)."""
    shape = Shape(body)
    check_depth(body, "body", levels_above, shape)
    try:
        decoded = decode_unique(body, "body", shape)
    except orjson.JSONDecodeError as exc:
        check_values(body, values, location)  # say which value, and where
        raise invalid_json(exc) from None
    if decoded is None:  # too many values to hold at once: checked record by record
        check_values(body, values, location)
        return Records(values, [record_keys(value) for value in values], location)
    records = decoded if field is None else decoded[field]
    keys: list[Keys] = [
        {"source_id": record.get("source_id"), "idempotency_key": record.get("idempotency_key")}
        if record.__class__ is dict
        else None
        for record in records
    ]
    return Records(values, keys, location)


def too_deep_to_decode(body: bytes, levels_above: int) -> ApiError:
    """The 400 for a body the decoder recursed too deep into (it names the place when
    the scan finds it)."""
    path = too_deep_path(body, MAX_NESTING_DEPTH + levels_above)
    return too_deep_error(".".join(["body", *(path or [])]))


def parse_batch(body: bytes, max_records: int) -> Records:
    """The records of ``{"records": [...]}`` or ``{"items": [...]}``: their exact bytes
    and key fields; counted (413) before any of them is decoded."""
    expected = 'expected an object {"records": [...]} or {"items": [...]}'
    try:
        fields = _FIELDS.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_body", f"{expected}: {exc}", "body") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # Invalid UTF-8 in a field name: msgspec >= 0.23 says DecodeError, older ones
        # UnicodeDecodeError; either way the 400 names the field when the body has one.
        check_values(body)
        raise invalid_json(exc) from None
    except RecursionError:
        raise too_deep_to_decode(body, BATCH_LEVELS) from None
    present = [key for key in BATCH_KEYS if key in fields]
    if not present:
        raise ApiError(422, "invalid_body", f"{expected}: neither field is there", "body")
    if len(present) > 1:  # a key twice says more (and would be the next refusal)
        check_depth(body, "body", BATCH_LEVELS)
        with suppress(orjson.JSONDecodeError):
            decode_unique(body, "body")
        raise ApiError(422, "invalid_body", f"{expected}: not both", "body")
    location = f"body.{present[0]}"
    values = split_array(fields[present[0]], max_records, location)
    return checked_records(body, values, location, BATCH_LEVELS, present[0])


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
