"""Delivery tracking and checkpoints of ``qanat import``, without stalling the producer.

Records are produced in chunks (a chunk ends every few thousand records); every record's
delivery report counts down its chunk. A checkpoint is the position after the newest chunk
whose records, and every earlier chunk's, Kafka acknowledged: the import never waits for
it, so the producer's queue stays full. Only an interruption flushes, to checkpoint the
very last record (a stop requested while the queue is full is noticed in that wait).

>>> chunk = Chunk()
>>> chunk.pending = 2
>>> chunk(None, None); chunk(None, None); chunk.pending
0
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import RetriableError
from pipelines.core.topics import Headers
from sources.files.readers import Position, Row
from sources.files.state import Checkpoint
from sources.files.stop import StopFlag

PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}
QUEUE_LIMITS = {
    # Flat memory on a big file: librdkafka keeps ~1 KB per queued message (its copy of the
    # key, value and 7 headers), and the import can produce faster than Kafka acknowledges;
    # 20,000 messages are still over 100 ms of the broker's pace.
    "queue.buffering.max.messages": 20_000,
    "queue.buffering.max.kbytes": 65_536,
}


class Chunk:
    """The delivery reports of the records produced between two marks (the producer calls
    it once per record, from ``poll`` in the importing thread)."""

    __slots__ = ("error", "pending", "produced", "row")

    def __init__(self) -> None:
        self.pending = 0
        self.error: KafkaError | None = None
        self.row: Row | None = None
        self.produced = 0

    def __call__(self, error: KafkaError | None, _message: Any) -> None:
        self.pending -= 1
        if error is not None and self.error is None:
            self.error = error


class Delivery:
    """An idempotent producer and the chunks of records it has not yet had reported."""

    def __init__(
        self,
        kafka: KafkaSettings,
        timeout_s: float,
        producer: Producer | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.stop = stop or StopFlag()
        if producer is None:
            # The queue limits apply unless the client config sets them.
            limits = {k: v for k, v in QUEUE_LIMITS.items() if k not in kafka.client_config}
            timeout = {"message.timeout.ms": int(timeout_s * 1000)}
            producer = Producer(kafka.client(**PRODUCER_CONFIG, **timeout, **limits))
        self.producer = producer
        self.chunk = Chunk()
        self._sealed: deque[Chunk] = deque()

    def produce(self, topic: str, value: bytes, key: bytes, headers: Headers) -> None:
        """Produce one record in the current chunk, waiting while the local queue is full;
        :class:`~sources.files.stop.Interrupted` (the record not produced) if a stop is
        requested meanwhile."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=self.chunk)
                self.chunk.pending += 1
                return
            except BufferError:  # the local queue is full: serve reports, which drain it
                self.stop.check()
                self.producer.poll(0.005)

    def seal(self, row: Row, produced: int) -> None:
        """End the current chunk after ``row`` (``produced`` records so far)."""
        chunk, self.chunk = self.chunk, Chunk()
        chunk.row, chunk.produced = row, produced
        self._sealed.append(chunk)

    def acknowledged(self) -> Chunk | None:
        """The newest sealed chunk that, with every earlier one, was acknowledged (None if
        none newly was); RetriableError if Kafka failed a record."""
        self.producer.poll(0)
        newest = None
        while self._sealed and self._sealed[0].pending == 0:
            chunk = self._sealed.popleft()
            self._raise(chunk.error)
            newest = chunk
        return newest

    def flush(self) -> None:
        """Wait for every report; RetriableError unless Kafka acknowledged every record."""
        remaining = self.producer.flush(self.timeout_s)
        for chunk in [*self._sealed, self.chunk]:
            self._raise(chunk.error)
        self._sealed.clear()
        if remaining:
            raise RetriableError(f"Kafka did not acknowledge {remaining} records in time")

    @staticmethod
    def _raise(error: KafkaError | None) -> None:
        if error is not None:
            raise RetriableError(f"Kafka did not acknowledge a record: {error.str()}")


class Saver:
    """Writes the checkpoint: every ``every`` records or ``interval_s`` seconds, the position
    after the last acknowledged chunk; on :meth:`save`, after a flush, the last record's.

    A position's ``offset`` is the record's ``Row.end`` (NDJSON: where a resumed read
    seeks), else the reader's byte offset when the row was marked or saved (CSV, JSON
    arrays: what a resumed import shows it starts at)."""

    def __init__(
        self, checkpoint: Checkpoint, ingestion_id: str, every: int, interval_s: float
    ) -> None:
        self.checkpoint = checkpoint
        self.ingestion_id = ingestion_id
        self.every = every
        self.interval_s = interval_s
        self.row: Row | None = None
        """The last record handed to the producer (or reported)."""
        self._acknowledged: Chunk | None = None
        self._read_at_save = 0
        self._at = time.monotonic()

    def mark(self, delivery: Delivery, read: int, produced: int) -> None:
        """End a chunk at the last record; checkpoint what is acknowledged when due."""
        if self.row is None:
            return
        delivery.seal(self.row, produced)
        newest = delivery.acknowledged()
        if newest is not None:
            self._acknowledged = newest
        due = read - self._read_at_save >= self.every
        if due or time.monotonic() - self._at >= self.interval_s:
            chunk = self._acknowledged
            if chunk is not None and chunk.row is not None:
                self._write(chunk.row, chunk.produced)
            self._read_at_save, self._at = read, time.monotonic()

    def save(self, delivery: Delivery, produced: int, offset: int) -> None:
        """Flush, then checkpoint the last record, read up to byte ``offset`` (an
        interruption's last act)."""
        if self.row is None:
            return
        delivery.flush()
        row = self.row if self.row.end else self.row._replace(end=offset)
        self._write(row, produced)

    def _write(self, row: Row, produced: int) -> None:
        position = Position(row.number, row.line, row.end)
        self.checkpoint.save(self.ingestion_id, position, produced)
