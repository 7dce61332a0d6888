"""The schemas topic as stored: its message keys and values, and a reader of the whole topic.

One message per proposed version, keyed ``{vertical}/{type}/{version:08d}/{proposal}``
(distinct keys, so compaction keeps them all, in order), valued ``{"vertical", "type",
"version", "schema", "registered_at"}`` (a :class:`SchemaVersion`). :class:`TopicReader`
reads the topic from the beginning with assign + seek, then onwards, and commits no offsets;
:func:`parse_message` turns a message into a version, or a tombstone, and skips with a
warning whatever is not one. Which record of a version wins, and what the versions mean,
is the registry's (:mod:`pipelines.transform.registry`).

>>> schema_key("shop", "product", 3)
'shop/product/00000003'
>>> proposal_key("shop", "product", 3, "p1")
'shop/product/00000003/p1'
>>> entry = SchemaVersion("shop", "product", 3, {"type": "object"}, "2026-01-01T00:00:00Z")
>>> SchemaVersion.from_message(orjson.dumps(entry.to_json())) == entry
True
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from pipelines.core.records import check_identifier

logger = logging.getLogger(__name__)


def schema_key(vertical: str, type_: str, version: int) -> str:
    """The key prefix of one version's proposals (a whole key before proposals had ids)."""
    return f"{vertical}/{type_}/{version:08d}"


def proposal_key(vertical: str, type_: str, version: int, proposal: str) -> str:
    """The message key of one proposal: distinct per writer and attempt, so compaction
    never replaces the first proposal of a version by a later one."""
    return f"{schema_key(vertical, type_, version)}/{proposal}"


class RegistryUnavailableError(FatalError):
    """The schemas topic could not be read or written in time."""


@dataclass(frozen=True)
class SchemaVersion:
    """One registered version, as stored in the topic."""

    vertical: str
    type: str
    version: int
    schema: dict[str, Any]
    registered_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "vertical": self.vertical,
            "type": self.type,
            "version": self.version,
            "schema": self.schema,
            "registered_at": self.registered_at,
        }

    @classmethod
    def from_message(cls, value: bytes) -> SchemaVersion:
        """Parse a message value; raises ValueError (or a subclass) when it is not one."""
        data = orjson.loads(value)
        if not isinstance(data, dict) or not isinstance(data.get("schema"), dict):
            raise ValueError("not a schema version object")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"bad version {version!r}")
        return cls(
            check_identifier("vertical", data["vertical"]),
            check_identifier("type", data["type"]),
            version,
            data["schema"],
            str(data.get("registered_at", "")),
        )


def _reader(kafka: KafkaSettings) -> Consumer:
    # librdkafka wants a group id even for assign(); nothing is ever committed with it.
    return Consumer(
        kafka.client(
            **{
                "group.id": f"{kafka.topic_prefix}.schemas-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )


class TopicReader:
    """Reads the schemas topic from the beginning, then onwards, one partition or more."""

    def __init__(self, kafka: KafkaSettings, timeout: float) -> None:
        self.topic = kafka.topics.schemas
        self.timeout = timeout
        self.consumer = _reader(kafka)
        metadata = self.consumer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self.consumer.close()
            raise RegistryUnavailableError(f"no topic {self.topic}: {topic and topic.error}")
        self.partitions = sorted(topic.partitions)
        self.next = dict.fromkeys(self.partitions, 0)
        self.consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions]
        )

    def end_offsets(self) -> dict[int, int]:
        ends = {}
        for partition in self.partitions:
            tp = TopicPartition(self.topic, partition)
            _low, high = self.consumer.get_watermark_offsets(tp, self.timeout, cached=False)
            ends[partition] = high
        return ends

    def behind(self, ends: dict[int, int]) -> bool:
        return any(self.next[p] < end for p, end in ends.items())

    def poll(self, timeout: float) -> Message | None:
        """The next data message, or None; an end-of-partition event advances ``next``."""
        message = self.consumer.poll(timeout)
        if message is None:
            return None
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                partition = message.partition() or 0
                self.next[partition] = max(self.next[partition], message.offset() or 0)
            else:
                logger.warning("reading %s: %s", self.topic, error)
            return None
        partition, offset = message.partition() or 0, message.offset() or 0
        self.next[partition] = max(self.next[partition], offset + 1)
        return message

    def until_end(self) -> Iterator[Message]:
        """Every message up to the end offsets as of now; raises when that takes too long."""
        deadline = time.monotonic() + self.timeout
        while True:  # a topic created a moment ago may have no leader yet
            try:
                ends = self.end_offsets()
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise RegistryUnavailableError(f"cannot read {self.topic}: {exc}") from None
                time.sleep(0.2)
        while self.behind(ends):
            if time.monotonic() > deadline:
                raise RegistryUnavailableError(
                    f"cannot read {self.topic} to its end within {self.timeout}s"
                )
            message = self.poll(0.2)
            if message is not None:
                yield message

    def close(self) -> None:
        self.consumer.close()


def parse_message(message: Message) -> tuple[str, SchemaVersion | None] | None:
    """(key, version or None for a tombstone), or None for a message that is not ours."""
    key = (message.key() or b"").decode("utf-8", "replace")
    value = message.value()
    if value is None:
        return key, None
    try:
        return key, SchemaVersion.from_message(value)
    except Exception as exc:  # whatever is in the topic, the readers go on
        logger.warning("skipping schemas message %r at offset %s: %s", key, message.offset(), exc)
        return None
