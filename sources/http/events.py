"""Raw events of one HTTP request, built cheaply: the HTTP source's hot path.

Same events as :func:`sources.base.build_raw_events` (same keys, same contract headers),
but the headers every event of a request shares are encoded once, and the event ids
(random UUIDs, version 4) come from one ``os.urandom`` call per request.

>>> ingestion_id, events, ids = request_events([b'{"source_id": "p1"}'], [{"source_id": "p1"}],
...                                       "shop", "product", "http")
>>> events[0].key, dict(events[0].headers)["qanat.vertical"]
('shop/product/p1', b'shop')
>>> len(uuid4_strings(3)), uuid4_strings(1)[0][14]
(3, '4')
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from pipelines.core import metrics
from pipelines.core.config import KafkaSettings
from pipelines.core.records import MAX_SOURCE_ID_LENGTH, RawEvent, client_source_id, new_id, now
from pipelines.core.topics import (
    H_CONTENT_TYPE,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    MESSAGE_OVERHEAD_BYTES,
    PRODUCER_MAX_MESSAGE_BYTES,
    TopicNames,
    record_key,
    topic_max_message_bytes,
)
from sources.base import ingestion_summary
from sources.http.errors import ApiError
from sources.publisher import KafkaPublisher, QueueFullError

CONTENT_TYPE = b"application/json"
SOURCE_NAME = "http"


def uuid4_strings(count: int) -> list[str]:
    """``count`` random version-4 UUIDs in their canonical text form."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((byte & 0x0F) | 0x40 for byte in raw[6::16])  # version 4
    raw[8::16] = bytes((byte & 0x3F) | 0x80 for byte in raw[8::16])  # RFC 4122 variant
    hexed = raw.hex()
    return [
        f"{hexed[i : i + 8]}-{hexed[i + 8 : i + 12]}-{hexed[i + 12 : i + 16]}-"
        f"{hexed[i + 16 : i + 20]}-{hexed[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def request_events(
    values: Sequence[bytes], objects: Sequence[Any], vertical: str, type_: str, source: str
) -> tuple[str, list[RawEvent], list[str]]:
    """One ingestion id for the request, one event per value (``objects[i]`` is
    ``values[i]`` parsed), keyed by the record's source id, else its event id; and the
    event ids (nothing is produced, nor counted)."""
    ingestion_id = new_id()
    head = [
        (H_VERTICAL, vertical.encode()),
        (H_TYPE, type_.encode()),
        (H_SOURCE, source.encode()),
        (H_INGESTION_ID, ingestion_id.encode()),
    ]
    tail = [(H_RECEIVED_AT, now().encode()), (H_CONTENT_TYPE, CONTENT_TYPE)]
    events = []
    event_ids = uuid4_strings(len(values))
    for value, obj, event_id in zip(values, objects, event_ids, strict=True):
        source_id = client_source_id(obj)
        key = record_key(vertical, type_, source_id) if source_id else event_id
        events.append(RawEvent(key, value, [*head, (H_EVENT_ID, event_id.encode()), *tail]))
    return ingestion_id, events, event_ids


def record_limit(kafka: KafkaSettings, max_record_bytes: int | None) -> int:
    """The largest Kafka message a record may make: ``max_record_bytes`` if set, else the
    raw topic's ``max.message.bytes`` (asked of the broker: call it once, at start-up),
    within what the producer itself takes (``message.max.bytes``)."""
    if max_record_bytes is not None:
        return max_record_bytes
    producer = int(kafka.client_config.get("message.max.bytes", PRODUCER_MAX_MESSAGE_BYTES))
    return min(topic_max_message_bytes(kafka.client(), kafka.topics.raw), producer)


# A key is the vertical, the type and a source id of at most this many characters, each
# at most 4 bytes in UTF-8 (or an event id, shorter).
_LONGEST_KEY = 2 + 2 * 63 + 4 * MAX_SOURCE_ID_LENGTH


def check_record_sizes(events: Sequence[RawEvent], limit: int, where: str | None) -> None:
    """413 ``record_too_large`` naming the first record whose Kafka message (value, key,
    headers and framing) would be over ``limit`` bytes: the broker (or the producer) would
    refuse it. ``where``: the location of the array the records came from (None: the body
    is the one record)."""
    if not events:
        return
    shared = MESSAGE_OVERHEAD_BYTES + sum(len(n) + len(v) for n, v in events[0].headers)
    if max(len(event.value) for event in events) + shared + _LONGEST_KEY <= limit:
        return  # none is near the limit
    for index, event in enumerate(events):
        size = shared + len(event.value) + len(event.key.encode())
        if size > limit:
            raise ApiError(
                413,
                "record_too_large",
                f"record {index} would be a {size}-byte Kafka message, over the {limit} "
                "bytes the raw topic takes",
                "body" if where is None else f"{where}.{index}",
                [{"path": "body" if where is None else f"{where}.{index}", "bytes": size}],
            )


# A request (or a WebSocket message) is the HTTP source's batch.
_REQUEST_SECONDS = metrics.BATCH_SECONDS.labels(stage="http")


async def publish_records(
    publisher: KafkaPublisher,
    topics: TopicNames,
    vertical: str,
    type_: str,
    records: Sequence[Any],
    values: Sequence[bytes],
    queue_full_wait_s: float,
    max_record_bytes: int = PRODUCER_MAX_MESSAGE_BYTES,
    where: str | None = None,
) -> tuple[str, list[str]]:
    """Publish one request's records, then its ingestion summary; return the ingestion id
    and the event ids once Kafka acknowledged them all. :class:`QueueFullError` (a 429)
    when the producer's queue has no room for them (checked first: nothing is produced)
    or stays full for ``queue_full_wait_s`` midway (what was produced before is kept);
    RetriableError (a 503) when Kafka did not acknowledge. A record whose message would
    be over ``max_record_bytes`` (Kafka would refuse it) is a 413 before anything is
    produced (:func:`check_record_sizes`; ``where``: the array the records came from)."""
    started = time.perf_counter()
    ingestion_id, events, event_ids = request_events(values, records, vertical, type_, SOURCE_NAME)
    check_record_sizes(events, max_record_bytes, where)
    if not publisher.room(len(values) + 1):
        raise QueueFullError("the producer queue is full", retry_after=1.0)
    metrics.count("source", "received", vertical, type_, len(events))
    summary = ingestion_summary(ingestion_id, vertical, type_, SOURCE_NAME, len(events))
    acks = publisher.acks()  # one wait for the events and the summary after them
    try:
        await publisher.produce_all(topics.raw, events, acks, queue_full_wait_s)
        await publisher.produce(topics.ingestions, summary, acks, queue_full_wait_s)
    finally:
        await publisher.wait(acks)
    _REQUEST_SECONDS.observe(time.perf_counter() - started)  # produced and acknowledged
    return ingestion_id, event_ids
