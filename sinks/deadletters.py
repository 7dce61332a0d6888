"""Where a sink's dead letters go: :class:`KafkaDeadLetters` produces them to
``<prefix>.dlq`` with the sink's error headers (design.md, "Dead letter"), cut to the
topic's size limit when a letter would outgrow it; :class:`LoggingDeadLetters` logs them.

>>> letter = DeadLetter(b"k", {"vertical": "shop", "type": "item"}, None, "t", 0, 7, "bad")
>>> letter_labels(letter)
('shop', 'item', None)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import dead_letter_headers, fit_dead_letter
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.logs import message_fields
from pipelines.core.topics import (
    H_INGESTION_ID,
    H_TYPE,
    H_VERTICAL,
    PRODUCER_MAX_MESSAGE_BYTES,
    decode_headers,
    topic_max_message_bytes,
)

logger = logging.getLogger(__name__)
STAGE = "sink"
# Kafka errors a retry cannot fix: a person must grant access first.
_DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED}
_DENIED |= {KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._AUTHENTICATION}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item the sink could not store, with why; a DeadLetterWriter sends it on."""

    key: Any
    value: Any
    headers: Sequence[tuple[str, Any]] | None
    topic: str
    partition: int
    offset: int
    reason: str
    details: list[dict[str, Any]] = field(default_factory=list)


class DeadLetterWriter(Protocol):
    """Where a sink's dead letters go; ``flush`` returns only when they are durable."""

    def send(self, letter: DeadLetter) -> None: ...

    def flush(self) -> None: ...


class LoggingDeadLetters:
    """The default when no writer is given: log each dead letter at ERROR level."""

    def send(self, letter: DeadLetter) -> None:
        logger.error(
            "dead letter %s[%d]@%d key=%r: %s %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.key,
            letter.reason,
            letter.details,
            extra=letter_fields(letter),
        )

    def flush(self) -> None:
        return None


def letter_labels(letter: DeadLetter) -> tuple[str, str, str | None]:
    """vertical, type and ingestion id of a dead letter (from the record, else its headers)."""
    value = letter.value if isinstance(letter.value, dict) else {}
    headers = decode_headers(letter.headers)
    vertical = value.get("vertical") or headers.get(H_VERTICAL) or "unknown"
    type_ = value.get("type") or headers.get(H_TYPE) or "unknown"
    return str(vertical), str(type_), value.get("ingestion_id") or headers.get(H_INGESTION_ID)


def letter_fields(letter: DeadLetter) -> dict[str, Any]:
    ingestion_id = letter_labels(letter)[2]
    return message_fields(letter.topic, letter.partition, letter.offset, ingestion_id)


def _key_bytes(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8", errors="replace")


def _value_bytes(value: Any) -> bytes | None:
    """The deserialized value as JSON again (bytes pass through, None stays a tombstone)."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(repr(value))


class KafkaDeadLetters:
    """Produces dead letters to ``<prefix>.dlq`` with the sink's error headers.

    The original key and headers are kept; the value (a record Quix deserialized) is
    serialized again with orjson. :meth:`flush` raises RetriableError unless every letter
    was acknowledged, so a sink never commits offsets before its dead letters are durable.

    >>> from pipelines.core.config import KafkaSettings
    >>> writer = KafkaDeadLetters(KafkaSettings(bootstrap_servers="127.0.0.1:9092"))
    >>> writer.topic
    'qanat.dlq'
    """

    def __init__(self, kafka: KafkaSettings, *, flush_timeout: float = 30.0) -> None:
        self.topic = kafka.topics.dlq
        self.flush_timeout = flush_timeout
        self._config = {"acks": "all", "enable.idempotence": True, **kafka.client()}
        self._producer: Any = None
        self._limit = PRODUCER_MAX_MESSAGE_BYTES  # the DLQ topic's, once it is read
        self._errors: list[Any] = []

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(err)

    def _get_producer(self) -> Any:
        if self._producer is None:  # created on first use: most batches have no dead letter
            self._producer = Producer(self._config)
            topic_limit = topic_max_message_bytes(self._config, self.topic, timeout=5.0)
            self._limit = min(topic_limit, PRODUCER_MAX_MESSAGE_BYTES)
        return self._producer

    def send(self, letter: DeadLetter) -> None:
        producer = self._get_producer()
        headers = dead_letter_headers(
            letter.headers,
            stage=STAGE,
            reason=letter.reason,
            details=letter.details,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
        )
        key = _key_bytes(letter.key)
        value, headers = fit_dead_letter(key, _value_bytes(letter.value), headers, self._limit)
        for _attempt in range(50):
            try:
                producer.produce(
                    self.topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                raise RetriableError(f"cannot produce to {self.topic}: {exc}", 5.0) from exc
        raise RetriableError(f"producer queue for {self.topic} stays full", 5.0)

    def flush(self) -> None:
        if self._producer is None:
            return
        remaining = self._producer.flush(self.flush_timeout)
        errors, self._errors = self._errors, []
        fatal = [err for err in errors if err.fatal() or err.code() in _DENIED]
        if fatal:
            raise FatalError(f"cannot write dead letters to {self.topic}: {fatal[0].str()}")
        if errors:
            raise RetriableError(
                f"{len(errors)} dead letter(s) not delivered to {self.topic}: {errors[0].str()}",
                5.0,
            )
        if remaining:
            raise RetriableError(
                f"{remaining} dead letter(s) still unacknowledged by "
                f"{self.topic} after {self.flush_timeout}s",
                5.0,
            )

    def close(self) -> None:
        self.flush()
