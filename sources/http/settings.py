"""The settings of ``qanat source http`` (env ``QANAT_HTTP_...``, YAML section ``http``): the
edge's timeouts and connection bounds, the webhook secrets, and the limits of every ingest
route.

>>> HttpSourceSettings().port
8080
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sources.http.server import EdgeSettings
from sources.http.webhooks import WebhookSettings


class HttpSourceSettings(EdgeSettings, WebhookSettings):
    """Settings of ``qanat source http``."""

    yaml_section: ClassVar[str] = "http"
    model_config = SettingsConfigDict(env_prefix="QANAT_HTTP_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.", examples=["0.0.0.0"])
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest accepted batch or single request body; 413 beyond "
        "(a stream has no total limit, only max_line_bytes).",
    )
    max_records: int = Field(1000, ge=1, description="Most records in one batch; 413 beyond.")
    max_record_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest Kafka message one record may make (its bytes, key, headers and "
        "framing); a larger one is a 413 record_too_large naming it, before anything is "
        "produced. Unset: the raw topic's max.message.bytes, read from the broker at "
        "start-up (within the producer's message.max.bytes, 1,000,000 by default).",
        examples=[1_000_000],
    )
    delivery_timeout_s: float = Field(
        30.0, gt=0, description="How long to wait for Kafka's acknowledgement before a 503."
    )
    max_line_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Longest line of an NDJSON stream; a longer line is rejected (with its "
        "line number) and skipped, and the stream goes on.",
    )
    stream_max_errors: int = Field(
        100,
        ge=0,
        description="Most rejected lines an NDJSON stream's response lists; the rest are "
        "only counted.",
    )
    producer_queue_max_messages: int = Field(
        # ~1 KB of bookkeeping per queued message: 20k bounds a stream's RSS at ~20 MB.
        20_000,
        ge=1,
        description="Capacity, in messages, of the Kafka producer's local queue "
        "(queue.buffering.max.messages); when it is full a stream stops reading its body.",
    )
    producer_queue_max_kbytes: int = Field(
        32 * 1024,
        ge=1,
        description="Capacity, in KiB, of the Kafka producer's local queue "
        "(queue.buffering.max.kbytes): bounds the service's memory under a large stream.",
    )
    queue_full_wait_s: float = Field(
        2.0,
        gt=0,
        description="How long a batch, single or webhook request waits for room in a full "
        "producer queue before it is refused with a 429 and Retry-After (a request that "
        "finds the queue without room for it is refused at once; a stream waits instead).",
    )
    rate_limit_per_s: float = Field(
        0.0,
        ge=0,
        description="Requests (and WebSocket messages) per second each API key (or client "
        "address, without a key) may send to the ingest routes, webhooks included; beyond "
        "it a 429 with Retry-After. 0: no limit.",
    )
    rate_limit_burst: int = Field(
        100,
        ge=1,
        description="Requests a client may send at once above rate_limit_per_s (the size "
        "of its token bucket).",
    )
    auth: Literal["keys", "none"] = Field(
        "keys",
        description="keys: every ingest route needs an API key (qanat keys create); none: "
        "no authentication, for development only (qanat up sets it).",
    )
    keys_path: Path | None = Field(
        None, description="SQLite file of the API keys; default <QANAT_DATA_DIR>/keys.db."
    )
    read_store: Literal["sqlite", "postgres", "none"] = Field(
        "sqlite",
        description="Where the reader routes (/api/v1/records/...) and the ingestion routes "
        "(/api/v1/ingestions/...) read: the store of qanat sink sqlite (QANAT_SQLITE_*) or "
        "qanat sink postgres (QANAT_POSTGRES_*), with its errors table; none: no such routes.",
    )
