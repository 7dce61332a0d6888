"""The OpenAPI description of the ingest routes: their bodies and every answer they give.

The routes read their bodies themselves (to stream them and word their errors), so the
request bodies are declared here; so are the 202 bodies and the error statuses, each
with the error body of :mod:`sources.http.errors`.

>>> sorted(map(str, INGEST_BATCH_RESPONSES))[:3]
['202', '400', '401']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.core.httperrors import doc_response, error_docs

JSON_MEDIA = ("application/json",)
NDJSON_MEDIA = ("application/x-ndjson", "application/jsonl")


def body_doc(media_types: Sequence[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required request body."""
    content = {media: {"schema": schema} for media in media_types}
    return {"requestBody": {"required": True, "content": content}}


def _object(required: Sequence[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


STRING: dict[str, Any] = {"type": "string"}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
OBJECT: dict[str, Any] = {"type": "object"}
LIST_OF_OBJECTS: dict[str, Any] = {"type": "array", "items": OBJECT}

BATCH_DOC = body_doc(
    JSON_MEDIA,
    {
        "oneOf": [
            _object(["records"], {"records": LIST_OF_OBJECTS}),
            _object(["items"], {"items": LIST_OF_OBJECTS}),
        ]
    },
)
ONE_DOC = body_doc(JSON_MEDIA, OBJECT)
ITEM_DOC = body_doc(JSON_MEDIA, _object(["entity", "type"], {"entity": STRING, "type": STRING}))
STREAM_DOC = body_doc(NDJSON_MEDIA, STRING)
WEBHOOK_DOC = body_doc(JSON_MEDIA, {"oneOf": [OBJECT, LIST_OF_OBJECTS]})

ACCEPTED = _object(
    ["ingestion_id", "record_count"], {"ingestion_id": STRING, "record_count": COUNT}
)
ONE_ACCEPTED = _object(
    ["ingestion_id", "record_count", "event_id"],
    {"ingestion_id": STRING, "record_count": COUNT, "event_id": STRING},
)
LINE_ERROR = _object(
    ["line", "code", "message"], {"line": COUNT, "code": STRING, "message": STRING}
)
STREAM_ACCEPTED = _object(
    ["ingestion_id", "accepted", "rejected", "errors", "errors_omitted"],
    {
        "ingestion_id": STRING,
        "accepted": COUNT,
        "rejected": COUNT,
        "errors": {"type": "array", "items": LINE_ERROR},
        "errors_omitted": COUNT,
    },
)


def _accepted(schema: dict[str, Any], what: str) -> dict[int | str, dict[str, Any]]:
    return {202: doc_response(f"{what}: Kafka acknowledged every record.", schema)}


KEYED_ERRORS = (400, 401, 403, 413, 415, 422, 429, 503)
INGEST_BATCH_RESPONSES = {
    **_accepted(ACCEPTED, "Accepted"),
    **error_docs(*KEYED_ERRORS),
}
INGEST_ONE_RESPONSES = {**_accepted(ONE_ACCEPTED, "Accepted"), **error_docs(*KEYED_ERRORS)}
INGEST_STREAM_RESPONSES = {
    **_accepted(STREAM_ACCEPTED, "Read to the end; the rejected lines are listed"),
    **error_docs(400, 401, 403, 415, 429, 503),
}
WEBHOOK_RESPONSES = {
    **_accepted(ACCEPTED, "Accepted"),
    **error_docs(400, 401, 413, 415, 422, 429, 503),
}
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: doc_response("The service is up.", _object(["status"], {"status": STRING}))
}
