"""The DLQ state topic (``pipelines/dlq/state.py``) right after it is created: on a fresh
broker its partition was not yet in the client's metadata, ``get_watermark_offsets``
raised ``_UNKNOWN_PARTITION``, and ``python -m benchmarks.run dlq_replay`` failed. Now
:meth:`DlqState.load` waits (within its timeout) for the partition."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines.core.config import KafkaSettings
from pipelines.dlq import state as dlq_state
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.state import DlqState, ReplayCheckpoint, write_state


class NewTopicConsumer:
    """Answers ``get_watermark_offsets`` as a consumer does while a topic is too new:
    ``errors`` first, then the offsets."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, *_args: Any, **_kwargs: Any) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, 3


def test_the_offsets_are_asked_again_until_the_new_partition_is_known() -> None:
    consumer = NewTopicConsumer(KafkaError._UNKNOWN_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    deadline = time.monotonic() + 5
    assert dlq_state._watermarks(consumer, "t", deadline) == (0, 3)  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_other_errors_and_a_partition_still_unknown_at_the_deadline_are_raised() -> None:
    consumer = NewTopicConsumer(KafkaError._TRANSPORT)
    with pytest.raises(KafkaException, match="_TRANSPORT"):
        dlq_state._watermarks(consumer, "t", time.monotonic() + 5)  # type: ignore[arg-type]
    assert consumer.calls == 1
    never = NewTopicConsumer(*[KafkaError._UNKNOWN_PARTITION] * 100)
    began = time.monotonic()
    with pytest.raises(KafkaException, match="_UNKNOWN_PARTITION"):
        dlq_state._watermarks(never, "t", began + 0.5)  # type: ignore[arg-type]
    assert 0.3 < time.monotonic() - began < 2, "bounded by the deadline"


@pytest.mark.integration
def test_a_state_topic_loaded_right_after_it_is_created(kafka_bootstrap: str) -> None:
    for _ in range(5):  # each a fresh, uniquely named state topic
        kafka = KafkaSettings(
            bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}"
        )
        state = DlqState.load(kafka)  # creates the topic, then reads it at once
        assert (state.replays, state.purges) == ({}, [])

    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}"
    )
    checkpoint = ReplayCheckpoint("r1", DlqFilter(), 3, {0: 7})
    write_state(kafka, checkpoint.key, checkpoint.to_json())  # creates it, then writes
    loaded = DlqState.load(kafka).replays
    assert list(loaded) == ["r1"] and loaded["r1"].positions == {0: 7}
