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


def ingestion_summary(
    ingestion_id: str, vertical: str, type_: str, source: str, accepted: int
) -> RawEvent:
    """The message for the ingestions topic saying how many events an ingestion put in
    Kafka; produced after them, with the same acknowledgement counter.

    >>> orjson.loads(ingestion_summary("i1", "shop", "product", "http", 3).value)["accepted"]
    3
    """
    summary = {
        "ingestion_id": ingestion_id,
        "vertical": vertical,
        "type": type_,
        "source": source,
        "accepted": accepted,
        "received_at": now(),
    }
    return RawEvent(ingestion_id, orjson.dumps(summary), [])


def _loads_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


class Acks:
    """The delivery reports of one ingestion: events can be added while earlier ones are
    being delivered; :meth:`seal` says no more will come, and ``future`` resolves once
    every added event was reported on (acknowledged or failed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending = 0
        self.acknowledged = 0
        self.failed = 0
        self.error: KafkaError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self._sealed = False
        self._lock = threading.Lock()

    def add(self) -> None:
        """Count one more event, before it is produced."""
        with self._lock:
            self.pending += 1

    def __call__(self, error: KafkaError | None, _message: Message | None) -> None:
        """The delivery report of one event (librdkafka's ``on_delivery``)."""
        with self._lock:
            if error is None:
                self.acknowledged += 1
            else:
                self.failed += 1
                if self.error is None:
                    self.error = error
            self.pending -= 1
            done = self._sealed and self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def seal(self) -> None:
        """No more events will be added; resolve once the pending ones are reported."""
        with self._lock:
            self._sealed = True
            done = self.pending == 0
        if done:
            self._resolve()

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaPublisher:
    """An idempotent producer whose ``publish`` returns once Kafka acknowledged everything.

    A background thread serves delivery reports, so the event loop never blocks on them.
    For a stream, :meth:`acks`, :meth:`produce` (which awaits while the local queue is
    full) and :meth:`wait` are the pieces ``publish`` is made of.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        delivery_timeout_s: float = 30.0,
        queue_max_messages: int | None = None,
        queue_max_kbytes: int | None = None,
    ) -> None:
        self.delivery_timeout_s = delivery_timeout_s
        #: How often a produce found the local queue full and waited for it to drain.
        self.queue_full_waits = 0
        config: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": int(delivery_timeout_s * 1000),
        }
        if queue_max_messages is not None:
            config["queue.buffering.max.messages"] = queue_max_messages
        if queue_max_kbytes is not None:
            config["queue.buffering.max.kbytes"] = queue_max_kbytes
        self._producer = Producer(kafka.client(**config))
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="qanat-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    def acks(self) -> Acks:
        """A new acknowledgement counter for one ingestion (call from the event loop)."""
        return Acks(asyncio.get_running_loop())

    async def publish(self, topic: str, events: Sequence[RawEvent]) -> None:
        """Produce every event; raise RetriableError unless Kafka acknowledged them all."""
        if not events:
            return
        acks = self.acks()
        try:
            for event in events:
                await self.produce(topic, event, acks)
        finally:
            await self.wait(acks)

    async def produce(self, topic: str, event: RawEvent, acks: Acks) -> None:
        """Hand one event to the producer, counted in ``acks``. While the local queue is
        full, await its draining (the caller reads no more input meanwhile); raise
        RetriableError if it stays full for ``delivery_timeout_s``."""
        key = event.key.encode()
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    topic, event.value, key, headers=event.headers, on_delivery=acks
                )
            except BufferError:  # the local queue is full: wait for deliveries to drain it
                if deadline is None:
                    self.queue_full_waits += 1
                    deadline = time.monotonic() + self.delivery_timeout_s
                elif time.monotonic() > deadline:
                    raise RetriableError(
                        "Kafka's producer queue stayed full; the events were not stored",
                        retry_after=5.0,
                    ) from None
                await asyncio.sleep(0.002)
            else:
                acks.add()
                return

    async def wait(self, acks: Acks) -> None:
        """Seal ``acks`` and wait for every delivery report; raise RetriableError unless
        Kafka acknowledged every event."""
        acks.seal()
        await acks.future
        if acks.error is not None:
            raise RetriableError(
                f"Kafka did not acknowledge {acks.failed} events: {acks.error.str()}",
                retry_after=5.0,
            )

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._poller.join()
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning("%d events were not delivered before shutdown", remaining)
