"""Reading dead letters: the ``<prefix>.dlq`` topic is the source of truth.

Every dead letter is in the DLQ topic with its exact key, value and headers (design.md);
the errors table (``record_errors``) is a copy the errors sink keeps for the ingestion
routes, and may lag, be another store, or not exist. So ``qanat dlq`` reads the topic:
:class:`DlqScanner` reads it partition by partition, from a start position up to the end
offsets as of the start of the scan (read_committed), as dead letters
(:mod:`pipelines.dlq.letter`), and a filter (:mod:`pipelines.dlq.filters`) picks the ones a
command is about. A full scan is linear in the size of the DLQ topic, which its retention
bounds; a partition/offset range or a cursor narrows what is read.

>>> from pipelines.dlq.filters import DlqFilter, select
>>> wanted = DlqFilter(vertical="shop")
>>> with DlqScanner(KafkaSettings()) as scanner:  # needs the broker   # doctest: +SKIP
...     letters = list(select(scanner.scan(scanner.ranges(wanted)), wanted))
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import suppress

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.letter import DeadLetter

Positions = dict[int, int]
"""Per partition, the next offset to read."""


class DlqScanner:
    """Reads the DLQ topic, one partition after another, up to the end offsets it finds
    when a scan starts; never commits. Close it when done (or use it as a context)."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 15.0, batch: int = 1000) -> None:
        self.topic = kafka.topics.dlq
        self.timeout = timeout
        self.batch = batch
        self.consumer = Consumer(
            kafka.client(
                **{
                    "group.id": f"{kafka.topic_prefix}.dlq-reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,  # the end of a partition is known sooner
                    "auto.offset.reset": "earliest",
                }
            )
        )

    def __enter__(self) -> DlqScanner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()

    def partitions(self) -> list[int]:
        metadata = self.consumer.list_topics(self.topic, timeout=self.timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise FatalError(f"cannot read topic {self.topic}: {topic and topic.error}")
        return sorted(topic.partitions)

    def ranges(self, wanted: DlqFilter, start: Positions | None = None) -> dict[int, range]:
        """Per selected partition, the offsets a scan reads: from the start position (or
        the filter's first offset, or the log start) to the end as of now."""
        ranges = {}
        for partition in self.partitions():
            if wanted.partitions is not None and partition not in wanted.partitions:
                continue
            tp = TopicPartition(self.topic, partition)
            low, high = self.consumer.get_watermark_offsets(tp, self.timeout, cached=False)
            first = max(low, (start or {}).get(partition, 0), wanted.from_offset or 0)
            last = high if wanted.to_offset is None else min(high, wanted.to_offset + 1)
            if first < last:
                ranges[partition] = range(first, last)
        return ranges

    def scan(self, ranges: dict[int, range], ordered: bool = True) -> Iterator[DeadLetter]:
        """Every dead letter in ``ranges``: in (partition, offset) order, or (faster, every
        partition at once) in offset order within each partition only."""
        if not ordered:
            yield from self._read(ranges)
            return
        for partition, offsets in sorted(ranges.items()):
            yield from self._read({partition: offsets})

    def _read(self, ranges: dict[int, range]) -> Iterator[DeadLetter]:
        pending = {p: r.stop for p, r in ranges.items() if len(r)}
        self.consumer.assign([TopicPartition(self.topic, p, ranges[p].start) for p in pending])
        idle_since = time.monotonic()
        try:
            while pending:
                messages = self.consumer.consume(self.batch, 0.1)
                if messages:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.timeout:
                    raise FatalError(f"{self.topic} {sorted(pending)} did not answer in time")
                for message in messages:
                    partition = message.partition() or 0
                    stop = pending.get(partition)
                    if stop is None:
                        continue  # finished, or not ours
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise FatalError(f"reading {self.topic}[{partition}]: {error}")
                        del pending[partition]
                        continue
                    offset = message.offset() or 0
                    if offset >= stop - 1:
                        del pending[partition]
                        if offset >= stop:
                            continue
                    yield DeadLetter(
                        partition,
                        offset,
                        message.timestamp()[1],
                        message.key(),
                        message.value(),
                        message.headers() or [],
                    )
        finally:
            with suppress(RuntimeError):  # closed already: a caller that stopped early
                self.consumer.unassign()
