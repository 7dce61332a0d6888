"""What the control plane's routes share: the JSON error body, JSON answers, identifier
checks and the OpenAPI description of their answers.

Errors use the body every qanat HTTP error has (see the HTTP source):
``{"error": {"code": ..., "message": ..., "location": ..., "details": [...]}}``.
The core imports no connector, so the small helper that builds it lives here.

>>> error_response(404, "schema_not_found", "no schema", "path").status_code
404
>>> bad_identifiers("shop", "product") is None
True
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from pipelines.core.records import check_identifier


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


def json_response(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def bad_identifiers(vertical: str, type_: str) -> Response | None:
    """The 400 for a vertical or type that is not an identifier, else None."""
    for kind, value in (("vertical", vertical), ("type", type_)):
        try:
            check_identifier(kind, value)
        except ValueError as exc:
            return error_response(400, f"invalid_{kind}", str(exc), f"path.{kind}")
    return None


# --- OpenAPI ---------------------------------------------------------------------------

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "location", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "location": {"type": ["string", "null"]},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}
ERROR_MEANINGS = {
    400: "Bad request: invalid JSON, identifier, parameter or cursor.",
    401: "Missing, malformed or unknown API key (or webhook signature).",
    403: "The API key lacks the scope or the vertical.",
    404: "Not found.",
    413: "Body (or batch) too large.",
    415: "Unsupported content type.",
    422: "Well-formed JSON of the wrong shape (with the paths).",
    429: "The client's rate limit, or the Kafka producer's queue, is exhausted: nothing of "
    "the request was acknowledged; retry after Retry-After seconds.",
    503: "Kafka, the registry or the store is unreachable: nothing was acknowledged; retry "
    "after Retry-After seconds.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def doc_response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """One OpenAPI response (a JSON body of ``schema``, any object if None)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` entries for the error statuses, with the error body, and
    ``4XX`` for any other (which also replaces FastAPI's default 422: a request that
    fails validation is a 400 with the error body)."""
    docs: dict[int | str, dict[str, Any]] = {
        "4XX": doc_response("Any other client error.", ERROR_SCHEMA)
    }
    for status in statuses:
        docs[status] = doc_response(ERROR_MEANINGS[status], ERROR_SCHEMA)
        if status in (429, 503):
            docs[status]["headers"] = RETRY_AFTER
    return docs


def responses(
    ok: dict[int, str], *errors: int, schema: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its success statuses (all with ``schema``) and errors."""
    docs: dict[int | str, dict[str, Any]] = {
        status: doc_response(text, schema) for status, text in ok.items()
    }
    return {**docs, **error_docs(*errors)}
