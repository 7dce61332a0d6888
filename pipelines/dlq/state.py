"""What the DLQ tooling remembers: replay checkpoints and purge rules.

Both live in one compacted topic, ``<prefix>.dlq-state`` (one partition), so any machine
that can reach Kafka sees them and a ``kill -9`` loses nothing that was committed:

* ``replay/<id>`` - a :class:`ReplayCheckpoint`: the replay's filter and loop guard, and
  per DLQ partition the next offset to read. The replay writes it in the same Kafka
  transaction as the messages it republished, so it is exactly as far as what was
  committed to the raw topic.
* ``purge/<id>`` - a :class:`PurgeRule`: a filter and the DLQ end offsets when the purge
  ran. A dead letter before those ends that the filter matches is purged: every command
  skips it. Kafka cannot delete one record, so this is what "purge" means for a letter
  that ``delete_records`` (which only cuts a partition's oldest records) cannot reach.

A checkpoint also says what other replays did: a dead letter is *already replayed* when
some checkpoint's filter matches it, its loop guard allowed it, and its position is
before that checkpoint's. Filters are pure functions of the message (times are stored
absolute), so this needs no record per replayed letter.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from pipelines.core.records import now
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.letter import DeadLetter
from pipelines.dlq.read import Positions

logger = logging.getLogger(__name__)


@dataclass
class ReplayCheckpoint:
    """How far replay ``id`` got: ``positions`` (next offset per DLQ partition)."""

    id: str
    filter: DlqFilter
    max_replays: int
    positions: Positions = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    updated_at: str = ""

    @property
    def key(self) -> bytes:
        return f"replay/{self.id}".encode()

    def covers(self, letter: DeadLetter) -> bool:
        """Whether this replay republished ``letter`` (or would have: a failed produce)."""
        return (
            letter.offset < self.positions.get(letter.partition, 0)
            and letter.replay_count < self.max_replays
            and self.filter.matches(letter)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "replay",
            "id": self.id,
            "filter": self.filter.to_json(),
            "max_replays": self.max_replays,
            "positions": {str(p): o for p, o in self.positions.items()},
            "counts": self.counts,
            "updated_at": self.updated_at or now(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayCheckpoint:
        return cls(
            str(data["id"]),
            DlqFilter.from_json(data["filter"]),
            int(data["max_replays"]),
            {int(p): int(o) for p, o in data.get("positions", {}).items()},
            {str(k): int(v) for k, v in data.get("counts", {}).items()},
            str(data.get("updated_at", "")),
        )


@dataclass(frozen=True)
class PurgeRule:
    """Dead letters before ``ends`` that ``filter`` matches are purged."""

    id: str
    filter: DlqFilter
    ends: Positions
    at: str

    @property
    def key(self) -> bytes:
        return f"purge/{self.id}".encode()

    def covers(self, letter: DeadLetter) -> bool:
        return letter.offset < self.ends.get(letter.partition, 0) and self.filter.matches(letter)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "purge",
            "id": self.id,
            "filter": self.filter.to_json(),
            "ends": {str(p): o for p, o in self.ends.items()},
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PurgeRule:
        ends = {int(p): int(o) for p, o in data.get("ends", {}).items()}
        return cls(str(data["id"]), DlqFilter.from_json(data["filter"]), ends, str(data["at"]))


_EXISTING: set[tuple[str, str]] = set()
"""State topics this process saw: asked about once."""

_NOT_YET = frozenset(
    {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
"""What asking for the offsets of a topic just created can answer until its partition is
in the client's metadata with a leader (seen on a fresh broker: ``_UNKNOWN_PARTITION``)."""
WAIT_FOR_PARTITION_EVERY_S = 0.1


def _watermarks(consumer: Consumer, topic: str, deadline: float) -> tuple[int, int]:
    """(low, high) of the state topic's partition, waiting until ``deadline`` while the
    topic is too new to have it in the metadata; then the last error, raised again."""
    while True:
        try:
            timeout = max(deadline - time.monotonic(), WAIT_FOR_PARTITION_EVERY_S)
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, 0), timeout, cached=False
            )
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in _NOT_YET:
                raise
            if time.monotonic() + WAIT_FOR_PARTITION_EVERY_S > deadline:
                raise
            logger.debug("%s has no partition metadata yet: %s", topic, error.str())
            time.sleep(WAIT_FOR_PARTITION_EVERY_S)


def ensure_state_topic(kafka: KafkaSettings, timeout: float = 15.0) -> str:
    """Create ``<prefix>.dlq-state`` (compacted, one partition) if it is missing."""
    name = kafka.topics.dlq_state
    if (kafka.bootstrap_servers, name) in _EXISTING:
        return name
    admin = AdminClient(kafka.client())
    if name in admin.list_topics(timeout=timeout).topics:
        _EXISTING.add((kafka.bootstrap_servers, name))
        return name
    topic = NewTopic(
        name,
        num_partitions=1,
        replication_factor=kafka.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    for future in admin.create_topics([topic], request_timeout=timeout).values():
        try:
            future.result(timeout=timeout)
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise FatalError(f"cannot create topic {name}: {exc}") from exc
    return name


class DlqState:
    """The replay checkpoints and purge rules, as committed when :meth:`load` ran."""

    def __init__(
        self,
        replays: dict[str, ReplayCheckpoint] | None = None,
        purges: list[PurgeRule] | None = None,
    ) -> None:
        self.replays = replays or {}
        self.purges = purges or []

    @classmethod
    def load(cls, kafka: KafkaSettings, timeout: float = 15.0) -> DlqState:
        """Read the whole state topic (read_committed), creating it if missing (waiting,
        within ``timeout``, for a topic just created to have its partition)."""
        topic = ensure_state_topic(kafka, timeout)
        state = cls()
        consumer = Consumer(
            kafka.client(
                **{
                    "group.id": f"{kafka.topic_prefix}.dlq-state-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,  # the end of a partition is known sooner
                }
            )
        )
        try:
            low, high = _watermarks(consumer, topic, time.monotonic() + timeout)
            if low >= high:
                return state
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise FatalError(f"{topic} could not be read within {timeout}s")
                message = consumer.poll(0.1)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return state
                    if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise FatalError(f"reading {topic}: {error}")
                    continue
                state.apply(message.key(), message.value())
        finally:
            consumer.close()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode("utf-8", "replace")
        kind, _, id_ = name.partition("/")
        try:
            data = None if value is None else orjson.loads(value)
            if kind == "replay":
                if data is None:
                    self.replays.pop(id_, None)
                else:
                    self.replays[id_] = ReplayCheckpoint.from_json(data)
            elif kind == "purge" and data is not None:
                self.purges = [r for r in self.purges if r.id != id_]
                self.purges.append(PurgeRule.from_json(data))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping DLQ state %r: %s", name, exc)

    def is_purged(self, letter: DeadLetter) -> bool:
        return bool(self.purges) and any(rule.covers(letter) for rule in self.purges)

    def replayed_by_other(self, letter: DeadLetter, own_id: str) -> bool:
        if not self.replays:
            return False
        return any(c.covers(letter) for i, c in self.replays.items() if i != own_id)


def write_state(
    kafka: KafkaSettings, key: bytes, value: dict[str, Any], timeout: float = 15.0
) -> None:
    """Store one state entry and wait for Kafka's acknowledgement."""
    topic = ensure_state_topic(kafka, timeout)
    producer = Producer(kafka.client(**{"acks": "all", "enable.idempotence": True}))
    outcome: list[KafkaError | None] = []
    producer.produce(
        topic, orjson.dumps(value), key, on_delivery=lambda err, _msg: outcome.append(err)
    )
    producer.flush(timeout)
    if not outcome or outcome[0] is not None:
        raise FatalError(
            f"{topic}: {key.decode()} not stored: {outcome[0] if outcome else 'no ack'}"
        )
