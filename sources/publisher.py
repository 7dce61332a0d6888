"""Publishing raw events for a source that answers clients (HTTP, WebSocket): an
idempotent producer whose ``publish`` returns once Kafka acknowledged every event
(design.md, "Delivery guarantees"), with per-ingestion delivery counting.

>>> QueueFullError("full").retry_after >= 0
True
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipelines.core import metrics
from pipelines.core.config import KafkaSettings
from pipelines.core.errors import RetriableError
from pipelines.core.records import RawEvent
from pipelines.core.topics import H_VERTICAL

logger = logging.getLogger(__name__)


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
        self.raw_events: Counter[tuple[bytes, bytes]] = Counter()

    def add(self, event: RawEvent | None = None) -> None:
        """Count one more event, before it is produced (a raw event also by vertical/type,
        for the ``produced`` metric once every event is acknowledged)."""
        with self._lock:
            self.pending += 1
        headers = event.headers if event is not None else None
        if headers and len(headers) > 1 and headers[0][0] == H_VERTICAL:
            self.raw_events[headers[0][1], headers[1][1]] += 1

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


class QueueFullError(RetriableError):
    """The producer's local queue has no room for the events: retry later (HTTP 429)."""


LIBRDKAFKA_QUEUE_MAX_MESSAGES = 100_000


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
        self.queue_max_messages = queue_max_messages or LIBRDKAFKA_QUEUE_MAX_MESSAGES
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
            await self.produce_all(topic, events, acks)
        finally:
            await self.wait(acks)

    def room(self, count: int) -> bool:
        """Whether ``count`` more events fit in the local queue now (by message count); an
        empty queue always has room (what does not fit waits for it to drain)."""
        queued = len(self._producer)
        return queued == 0 or queued + count <= self.queue_max_messages

    async def produce(
        self, topic: str, event: RawEvent, acks: Acks, max_wait_s: float | None = None
    ) -> None:
        """Hand one event to the producer, counted in ``acks``. While the local queue is
        full, await its draining (the caller reads no more input meanwhile); raise
        RetriableError if it stays full for ``delivery_timeout_s``, or
        :class:`QueueFullError` if it stays full for ``max_wait_s`` when given."""
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
                    deadline = time.monotonic() + (max_wait_s or self.delivery_timeout_s)
                elif time.monotonic() > deadline:
                    error = RetriableError if max_wait_s is None else QueueFullError
                    raise error(
                        "Kafka's producer queue stayed full; the events were not stored",
                        retry_after=1.0 if max_wait_s is not None else 5.0,
                    ) from None
                await asyncio.sleep(0.002)
            else:
                acks.add(event)
                return

    async def produce_all(
        self, topic: str, events: Sequence[RawEvent], acks: Acks, max_wait_s: float | None = None
    ) -> None:
        """:meth:`produce` every event, in order, without an await per event while the
        local queue has room."""
        producer = self._producer
        for event in events:
            try:
                producer.produce(
                    topic, event.value, event.key.encode(), headers=event.headers, on_delivery=acks
                )
            except BufferError:
                await self.produce(topic, event, acks, max_wait_s)
            else:
                acks.add(event)

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
        for (vertical, type_), n in acks.raw_events.items():
            metrics.count("source", "produced", vertical.decode(), type_.decode(), n)

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._poller.join()
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning("%d events were not delivered before shutdown", remaining)
