"""Topic names, message keys and header names of the record contract (design.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Raw-event headers, set by every source.
H_VERTICAL = "qanat.vertical"
H_TYPE = "qanat.type"
H_SOURCE = "qanat.source"
H_INGESTION_ID = "qanat.ingestion_id"
H_EVENT_ID = "qanat.event_id"
H_RECEIVED_AT = "qanat.received_at"
H_CONTENT_TYPE = "content-type"
# Optional: the device a message came from (MQTT: the topic's {device_id} level); the
# record's source_id when the payload has none.
H_DEVICE_ID = "qanat.device_id"

# Dead-letter headers, added by the stage that rejected the event.
H_ERROR_STAGE = "qanat.error.stage"
H_ERROR_REASON = "qanat.error.reason"
H_ERROR_DETAILS = "qanat.error.details"
H_ERROR_AT = "qanat.error.at"
H_ERROR_TOPIC = "qanat.error.topic"
H_ERROR_PARTITION = "qanat.error.partition"
H_ERROR_OFFSET = "qanat.error.offset"
H_REPLAY_COUNT = "qanat.replay.count"
H_ERROR_TRUNCATED = "qanat.error.truncated"  # the original value's length, when cut
# Set by `qanat dlq replay` / `import` on a republished event: the error it had last.
H_REPLAY_LAST_ERROR = "qanat.replay.last_error"

Headers = list[tuple[str, bytes]]

DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default ``max.message.bytes`` of a topic (1 MiB plus a record batch's overhead)."""
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: a producer refuses a larger message itself."""
MESSAGE_OVERHEAD_BYTES = 512
"""What a record batch adds around one message (framing, rounded up), for size checks."""


@dataclass(frozen=True)
class TopicNames:
    """The topics of one qanat deployment, all under one prefix."""

    prefix: str = "qanat"

    @property
    def raw(self) -> str:
        return f"{self.prefix}.raw"

    @property
    def records(self) -> str:
        return f"{self.prefix}.records"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def schemas(self) -> str:
        return f"{self.prefix}.schemas"

    @property
    def ingestions(self) -> str:
        """Compacted: one summary per ingestion (key: its id), written by the sources once
        Kafka acknowledged its events, read by the errors sink (``GET /ingestions/{id}``)."""
        return f"{self.prefix}.ingestions"

    @property
    def dlq_state(self) -> str:
        """Compacted: the DLQ tooling's replay checkpoints and purge rules (``qanat dlq``);
        created by that tooling on first use, so not in :meth:`all`."""
        return f"{self.prefix}.dlq-state"

    def all(self) -> tuple[str, ...]:
        return (self.raw, self.records, self.dlq, self.schemas, self.ingestions)


def record_key(vertical: str, type_: str, source_id: str) -> str:
    """The key that sends every version of one entity to one partition."""
    return f"{vertical}/{type_}/{source_id}"


def encode_headers(values: Mapping[str, str]) -> Headers:
    return [(name, value.encode("utf-8")) for name, value in values.items()]


def decode_headers(headers: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """Headers as a dict of UTF-8 strings (the last value wins for a repeated name)."""
    if not headers:
        return {}
    try:  # the hot path: every value is bytes
        return {name: value.decode("utf-8", "replace") for name, value in headers}
    except AttributeError:
        pass
    decoded: dict[str, str] = {}
    for name, value in headers:
        if isinstance(value, bytes | bytearray):
            decoded[name] = bytes(value).decode("utf-8", errors="replace")
        elif value is not None:
            decoded[name] = str(value)
    return decoded


def ensure_topics(
    client_config: dict[str, Any],
    topics: TopicNames,
    partitions: int,
    replication_factor: int,
    timeout: float = 30.0,
) -> None:
    """Create the qanat topics that do not exist yet (the schemas topic is compacted)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config)
    existing = admin.list_topics(timeout=timeout).topics
    wanted = []
    for name in topics.all():
        if name in existing:
            continue
        compacted = name in (topics.schemas, topics.ingestions)
        config = {"cleanup.policy": "compact"} if compacted else {}
        wanted.append(
            NewTopic(
                name,
                num_partitions=1 if name == topics.schemas else partitions,
                replication_factor=replication_factor,
                config=config,
            )
        )
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def topic_max_message_bytes(
    client_config: dict[str, Any], topic: str, timeout: float = 10.0
) -> int:
    """The broker's ``max.message.bytes`` for ``topic`` (the largest record batch it takes),
    or :data:`DEFAULT_MAX_MESSAGE_BYTES` when the broker cannot say (no topic yet, no
    DescribeConfigs permission): a limit a source and the transform can refuse by."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(client_config)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
        return int(configs["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError, TimeoutError) as exc:
        logger.info("max.message.bytes of %s unknown (%s); assuming the default", topic, exc)
        return DEFAULT_MAX_MESSAGE_BYTES
