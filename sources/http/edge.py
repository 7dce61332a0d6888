"""What the HTTP service answers besides ingestion: client hang-ups, ``/metrics``, the docs.

A client that hangs up before its request is read (mid-body) is counted in
``qanat_http_client_disconnects_total`` and logged at debug level, never as an error: anyone
can hang up, so an error line per hang-up would let anyone flood the log.

``/metrics``, ``/docs``, ``/redoc`` and ``/openapi.json`` sit on the ingest port and need a
key with the ``admin`` scope (``Authorization: Bearer <key>``; for ``/docs``, which a browser
opens, ``?token=<key>`` too), unless ``public_metrics`` / ``public_docs`` is set or ``auth``
is ``none``. Prometheus sends the key with ``authorization: {credentials: <key>}`` in its
scrape config.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from pipelines.core.metrics import HTTP_DISCONNECTS
from sources.http.auth import Authenticator, check_scope

logger = logging.getLogger(__name__)

__all__ = ["install_edge"]


def install_edge(
    app: FastAPI, authenticator: Authenticator, public_metrics: bool, public_docs: bool
) -> None:
    """Count hang-ups, and serve ``/metrics`` and the docs (the app is made with
    ``docs_url``, ``redoc_url`` and ``openapi_url`` None)."""

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        HTTP_DISCONNECTS.inc()
        logger.debug("client hung up during %s %s", request.method, request.url.path)
        return Response(status_code=499)  # never sent: nobody is listening

    admin = authenticator.require("admin")

    def token_admin(request: Request) -> None:
        """The admin check, with ``?token=`` accepted as the key (a browser's /docs)."""
        header = request.headers.get("authorization")
        token = request.query_params.get("token")
        key = authenticator.authenticate(header or (f"Bearer {token}" if token else None))
        check_scope(key, "admin")

    metrics_deps = [] if public_metrics else [Depends(admin)]
    docs_deps = [] if public_docs else [Depends(token_admin)]

    @app.get("/metrics", dependencies=metrics_deps, include_in_schema=False)
    def metrics() -> Response:  # sync: FastAPI runs it in a thread
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", dependencies=docs_deps, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=docs_deps, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=_spec_url(request), title=app.title)

    @app.get("/redoc", dependencies=docs_deps, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=_spec_url(request), title=app.title)


def _spec_url(request: Request) -> Any:
    """``/openapi.json``, carrying the page's ``?token=`` on to the document's fetch."""
    token = request.query_params.get("token")
    return (
        str(request.url_for("openapi").include_query_params(token=token))
        if token
        else ("/openapi.json")
    )
