"""Reading what landed on a real Kafka topic, for assertions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Message

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import decode_headers


@dataclass
class Landed:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    partition: int
    offset: int

    @classmethod
    def of(cls, message: Message) -> Landed:
        """What a consumed message carries."""
        return cls(
            message.key(),
            message.value(),
            decode_headers(message.headers()),
            message.partition(),
            message.offset(),
        )


def consume(
    kafka: KafkaSettings, topic: str, expected: int, timeout: float = 60.0, settle: float = 1.0
) -> list[Landed]:
    """Every committed message of ``topic`` from the start (a read_committed reader): waits
    for ``expected``, then ``settle`` more seconds, so extra (duplicate) ones are seen too."""
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    landed: list[Landed] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is None and len(landed) >= expected:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() > settle_until:
                break
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            landed.append(Landed.of(message))
    finally:
        consumer.close()
    return landed
