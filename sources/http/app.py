"""The HTTP source: clients push records, qanat answers 202 once Kafka has them.

Routes (all under ``/api/v1``): ``POST /ingest/{vertical}/{type}/batch`` with
``{"records": [...]}`` (entity shape) or ``{"items": [...]}`` (item shape);
``POST /ingest/{vertical}/{type}`` with one record; ``POST /ingest`` with one item whose
``entity`` and ``type`` name the vertical and type; ``POST /ingest/{vertical}/{type}/stream``
with NDJSON, read and produced line by line (:mod:`sources.http.stream`);
``POST /webhooks/ingest/{vertical}/{type}`` with one record or an array, signed with an
HMAC instead of an API key (:mod:`sources.http.webhooks`); the WebSocket
``/ws/ingest/{vertical}/{type}``, an ack per message (:mod:`sources.http.ws`).

Every ingest route but the webhook needs ``Authorization: Bearer <API key>`` with the
``write`` scope on the vertical (:mod:`sources.http.auth`), unless ``auth`` is ``none``. Every
ingest route counts against its client's rate limit (:mod:`sources.http.ratelimit`; off by
default): beyond it, a 429 with ``Retry-After``; so is a request that finds the Kafka
producer's queue full (the NDJSON stream waits instead: TCP backpressure).

The key is checked before anything else (a dependency: 401, then 403, then the request's
own 4xx). Every error a client can cause is a 4xx with a JSON body saying what is wrong
and where (:mod:`sources.http.errors`); values no consumer could decode (invalid UTF-8, a
number beyond a float) are a 400 too (:mod:`sources.http.values`). Records that are JSON
objects but invalid are accepted: the transform stage validates them and keeps the
rejects, with reasons, in the DLQ.

>>> from fastapi.testclient import TestClient                       # doctest: +SKIP
>>> app = create_app(KafkaSettings(), HttpSourceSettings())          # doctest: +SKIP
>>> TestClient(app).post("/api/v1/ingest/shop/product/batch",        # doctest: +SKIP
...                      json={"records": [{"name": "Lamp", "source_id": "p1"}]}).status_code
202
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import ConfigError
from pipelines.core.topics import ensure_topics
from sources.http.auth import ApiKey, Authenticator, KeyStore
from sources.http.body import (
    Records,
    body_identifier,
    check_content_type,
    check_stream_content_type,
    identifier,
    parse_batch,
    parse_object,
    read_body,
)
from sources.http.docs import (
    BATCH_DOC,
    HEALTH_RESPONSES,
    INGEST_BATCH_RESPONSES,
    INGEST_ONE_RESPONSES,
    INGEST_STREAM_RESPONSES,
    ITEM_DOC,
    ONE_DOC,
    STREAM_DOC,
    WEBHOOK_DOC,
    WEBHOOK_RESPONSES,
)
from sources.http.edge import install_edge
from sources.http.errors import ApiError, install_error_handlers
from sources.http.events import SOURCE_NAME, publish_records, record_limit
from sources.http.jsoncheck import prepare_split
from sources.http.ratelimit import RateLimiter, client_identity
from sources.http.settings import HttpSourceSettings
from sources.http.stream import StreamTarget, ingest_ndjson
from sources.http.webhooks import (
    claimed_signature,
    no_secret_error,
    parse_webhook_body,
)
from sources.http.ws import ws_ingest_router
from sources.publisher import KafkaPublisher

__all__ = ["ApiError", "HttpSourceSettings", "create_app"]

logger = logging.getLogger(__name__)


def create_app(
    kafka: KafkaSettings,
    settings: HttpSourceSettings,
    publisher: KafkaPublisher | None = None,
    keys: KeyStore | None = None,
) -> FastAPI:
    """The ingest API; it creates the qanat topics and its Kafka producer on start-up.
    ``keys`` is required unless ``settings.auth`` is ``none``."""
    if settings.auth == "keys" and keys is None:
        raise ConfigError("QANAT_HTTP_AUTH=keys needs a key store (or set it to none)")
    authenticator = Authenticator(keys if settings.auth == "keys" else None)
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    prepare_split(settings.max_records)

    write_auth = Depends(authenticator.require("write"))

    async def write_key(request: Request, key: ApiKey | None = write_auth) -> ApiKey | None:
        """The request's key, checked for the write scope, and its rate limit taken."""
        limiter.check(client_identity(key.id if key else None, _host(request)))
        return key

    writer = Depends(write_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
        app.state.max_record_bytes = record_limit(kafka, settings.max_record_bytes)
        app.state.publisher = publisher or KafkaPublisher(
            kafka,
            settings.delivery_timeout_s,
            queue_max_messages=settings.producer_queue_max_messages,
            queue_max_kbytes=settings.producer_queue_max_kbytes,
        )
        # What start-up made lives as long as the process: keep the garbage collector from
        # re-scanning it on every full collection (a batch allocates thousands of objects).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.publisher.close()

    app = FastAPI(
        title="qanat ingest API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # install_edge serves them, behind the admin scope
        redoc_url=None,
        openapi_url=None,
    )
    app.state.authenticator = authenticator  # for the read routes' require("read")
    app.state.limiter = limiter
    install_error_handlers(app)
    install_edge(app, authenticator, settings.public_metrics, settings.public_docs)
    app.include_router(ws_ingest_router(kafka.topics, settings, authenticator, limiter))

    async def publish(
        request: Request, vertical: str, type_: str, records: Records
    ) -> tuple[str, list[str]]:
        return await publish_records(
            request.app.state.publisher,
            kafka.topics,
            vertical,
            type_,
            records.keys,
            records.values,
            settings.queue_full_wait_s,
            request.app.state.max_record_bytes,
            records.where,
        )

    @app.get("/healthz", responses=HEALTH_RESPONSES)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/api/v1/ingest/{vertical}/{type}/batch",
        status_code=202,
        openapi_extra=BATCH_DOC,
        responses=INGEST_BATCH_RESPONSES,
    )
    async def ingest_batch(
        vertical: str, type: str, request: Request, _key: ApiKey | None = writer
    ) -> dict[str, Any]:
        """Accept ``{"records": [...]}`` or ``{"items": [...]}``; 202 once Kafka
        acknowledged every record."""
        vertical, type_ = identifier("vertical", vertical), identifier("type", type)
        check_content_type(request)
        records = parse_batch(
            await read_body(request, settings.max_body_bytes), settings.max_records
        )
        ingestion_id, _ids = await publish(request, vertical, type_, records)
        return {"ingestion_id": ingestion_id, "record_count": len(records.values)}

    @app.post(
        "/api/v1/ingest/{vertical}/{type}/stream",
        status_code=202,
        openapi_extra=STREAM_DOC,
        responses=INGEST_STREAM_RESPONSES,
    )
    async def ingest_stream(
        vertical: str, type: str, request: Request, _key: ApiKey | None = writer
    ) -> dict[str, Any]:
        """NDJSON, one object per line, read and produced as it arrives; 202 with the
        accepted and rejected line counts once Kafka acknowledged every accepted line.
        While the producer's queue is full the body is not read (TCP backpressure)."""
        vertical, type_ = identifier("vertical", vertical), identifier("type", type)
        check_stream_content_type(request)
        target = StreamTarget(
            request.app.state.publisher,
            kafka.topics.raw,
            vertical,
            type_,
            SOURCE_NAME,
            kafka.topics.ingestions,
        )
        return await ingest_ndjson(
            request.stream(), target, settings.max_line_bytes, settings.stream_max_errors
        )

    @app.post(
        "/api/v1/ingest/{vertical}/{type}",
        status_code=202,
        openapi_extra=ONE_DOC,
        responses=INGEST_ONE_RESPONSES,
    )
    async def ingest_one(
        vertical: str, type: str, request: Request, _key: ApiKey | None = writer
    ) -> dict[str, Any]:
        """One record (entity or item shape); 202 once Kafka acknowledged it."""
        vertical, type_ = identifier("vertical", vertical), identifier("type", type)
        check_content_type(request)
        body = await read_body(request, settings.max_body_bytes)
        record = parse_object(body)
        ingestion_id, ids = await publish(request, vertical, type_, Records([body], [record], None))
        return {"ingestion_id": ingestion_id, "record_count": 1, "event_id": ids[0]}

    @app.post(
        "/api/v1/ingest", status_code=202, openapi_extra=ITEM_DOC, responses=INGEST_ONE_RESPONSES
    )
    async def ingest_item(request: Request, key: ApiKey | None = writer) -> dict[str, Any]:
        """One item whose ``entity`` names the vertical and ``type`` the type."""
        check_content_type(request)
        body = await read_body(request, settings.max_body_bytes)
        item = parse_object(body)
        if isinstance(item.get("entity"), str):  # the key's verticals first, then the rest
            authenticator.authorize(key, "write", item["entity"])
        vertical = body_identifier(item, "entity", "vertical")
        type_ = body_identifier(item, "type", "type")
        ingestion_id, ids = await publish(request, vertical, type_, Records([body], [item], None))
        return {"ingestion_id": ingestion_id, "record_count": 1, "event_id": ids[0]}

    @app.post(
        "/api/v1/webhooks/ingest/{vertical}/{type}",
        status_code=202,
        openapi_extra=WEBHOOK_DOC,
        responses=WEBHOOK_RESPONSES,
    )
    async def ingest_webhook(vertical: str, type: str, request: Request) -> dict[str, Any]:
        """One record or an array of them, signed with the vertical's webhook secret (no
        API key: the signature authenticates); 202 once Kafka acknowledged them all."""
        limiter.check(client_identity(None, _host(request)))
        # Checked before its secret is looked up: "shop\n" is no vertical (and so never
        # one without a secret of its own, verified with the global one).
        vertical = identifier("vertical", vertical)
        policy = settings.webhook_policy(vertical)
        if policy is None:
            raise no_secret_error()
        signature = claimed_signature(policy, request.headers)  # 401s first, then the rest
        body = await read_body(request, settings.max_body_bytes)
        if signature is not None:
            signature.verify(body)
        type_ = identifier("type", type)
        check_content_type(request)
        records = parse_webhook_body(body, settings.max_records)
        ingestion_id, _ids = await publish(request, vertical, type_, records)
        return {"ingestion_id": ingestion_id, "record_count": len(records.values)}

    return app


def _host(request: Request) -> str | None:
    return request.client.host if request.client else None
