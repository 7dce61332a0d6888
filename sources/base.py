"""What every source shares: turning client objects into raw events and publishing them.

A source acknowledges its client only after Kafka acknowledged every event
(design.md, "Delivery guarantees"); :class:`KafkaPublisher` is how it knows.

>>> meta_events = build_raw_events([b'{"name": "a"}'], "shop", "product", "http")
>>> meta_events[1][0].headers[0]
('qanat.vertical', b'shop')
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from pipelines.config import KafkaSettings
from pipelines.errors import RetriableError
from pipelines.records import RawEvent, RawMeta, new_id, now, raw_event

logger = logging.getLogger(__name__)


def build_raw_events(
    values: Sequence[bytes],
    vertical: str,
    type_: str,
    source: str,
    objects: Sequence[Any] | None = None,
) -> tuple[str, list[RawEvent]]:
    """One ingestion id for the whole request, one event id and raw event per value."""
    ingestion_id = new_id()
    received_at = now()
    events = []
    for index, value in enumerate(values):
        obj = objects[index] if objects is not None else _loads_or_none(value)
        meta = RawMeta(vertical, type_, source, ingestion_id, new_id(), received_at)
        events.append(raw_event(value, obj, meta))
    return ingestion_id, events


def _loads_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


class _Acks:
    """Counts the delivery reports of one batch and resolves a future on the last one."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = count
        self.error: KafkaError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def __call__(self, error: KafkaError | None, _message: Message | None) -> None:
        with self._lock:
            if error is not None and self.error is None:
                self.error = error
            self.remaining -= 1
            done = self.remaining == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def abandon(self, count: int, error: KafkaError) -> None:
        """Count ``count`` events that were never produced as failed."""
        for _ in range(count):
            self(error, None)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaPublisher:
    """An idempotent producer whose ``publish`` returns once Kafka acknowledged everything.

    A background thread serves delivery reports, so the event loop never blocks on them.
    """

    def __init__(self, kafka: KafkaSettings, delivery_timeout_s: float = 30.0) -> None:
        self.delivery_timeout_s = delivery_timeout_s
        self._producer = Producer(
            kafka.client(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "message.timeout.ms": int(delivery_timeout_s * 1000),
                }
            )
        )
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="qanat-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    async def publish(self, topic: str, events: Sequence[RawEvent]) -> None:
        """Produce every event; raise RetriableError unless Kafka acknowledged them all."""
        if not events:
            return
        acks = _Acks(len(events), asyncio.get_running_loop())
        deadline = time.monotonic() + self.delivery_timeout_s
        for index, event in enumerate(events):
            if not await self._produce(topic, event, acks, deadline):
                acks.abandon(len(events) - index, KafkaError(KafkaError._QUEUE_FULL))
                break
        await acks.future
        if acks.error is not None:
            raise RetriableError(
                f"Kafka did not acknowledge the events: {acks.error.str()}", retry_after=5.0
            )

    async def _produce(self, topic: str, event: RawEvent, acks: _Acks, deadline: float) -> bool:
        while True:
            try:
                self._producer.produce(
                    topic, event.value, event.key.encode(), headers=event.headers, on_delivery=acks
                )
                return True
            except BufferError:  # the local queue is full: wait for deliveries to drain it
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.005)

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._poller.join()
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning("%d events were not delivered before shutdown", remaining)
