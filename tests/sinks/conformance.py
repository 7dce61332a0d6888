"""The behaviour every qanat sink must have, as one test class to subclass.

A subclass provides three things:

* a ``make_sink`` fixture: ``make_sink(dead_letters) -> UpsertSink``, a new sink (not set
  up) writing to a fresh, empty table;
* :meth:`SinkConformance.read_rows`: the stored rows, normalized to plain values;
* :meth:`SinkConformance.rejected_value` and :meth:`SinkConformance.retriable_failure`:
  a record this database refuses, and a context in which a write fails for a while.

The sink is driven the way Quix Streams drives it (``setup``, ``add``, ``flush``), so no
Kafka is needed; dead letters are collected in a list.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
from quixstreams.sinks import SinkBackpressureError

from pipelines.core.topics import record_key
from sinks.base import DeadLetter, UpsertSink

TOPIC = "qanat.records"
T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:00:01.000000Z"
T2 = "2026-01-01T00:00:02.000000Z"
Key = tuple[str, str, str]
MakeSink = Callable[["ListDeadLetters"], UpsertSink]


@dataclass
class ListDeadLetters:
    """A dead-letter writer that keeps what it is sent; ``flushed`` counts flushes."""

    letters: list[DeadLetter] = field(default_factory=list)
    pending: list[DeadLetter] = field(default_factory=list)
    flushed: int = 0

    def send(self, letter: DeadLetter) -> None:
        self.pending.append(letter)

    def flush(self) -> None:
        self.letters += self.pending
        self.pending.clear()
        self.flushed += 1


def record(source_id: str = "p1", event_time: str = T0, **overrides: Any) -> dict[str, Any]:
    """A record as the transform writes it to the records topic."""
    value: dict[str, Any] = {
        "vertical": "shop",
        "type": "product",
        "source_id": source_id,
        "name": f"Lamp {source_id}",
        "vertical_data": {"price": 9, "tags": ["a", "b"], "nested": {"ok": True}},
        "source": "http",
        "ingestion_id": "ing-1",
        "event_id": f"ev-{source_id}",
        "event_time": event_time,
        "received_at": T0,
        "schema_version": 1,
    }
    return value | overrides


def deliver(sink: UpsertSink, *items: tuple[int, Any], partition: int = 0) -> None:
    """Add ``(offset, value)`` items as one batch of one partition, then flush it."""
    for offset, value in items:
        key = None
        if isinstance(value, dict) and {"vertical", "type", "source_id"} <= value.keys():
            key = record_key(value["vertical"], value["type"], str(value["source_id"]))
        headers = [("qanat.ingestion_id", b"ing-1"), ("qanat.replay.count", b"2")]
        sink.add(value, key, 1_767_225_600_000, headers, TOPIC, partition, offset)
    sink.flush()


def key_of(value: dict[str, Any]) -> Key:
    return (value["vertical"], value["type"], value["source_id"])


class SinkConformance:
    """Subclass with a ``make_sink`` fixture and the three methods below."""

    def read_rows(self, sink: UpsertSink) -> dict[Key, dict[str, Any]]:
        """Every stored row by key: name, data (a dict), source, ingestion_id, event_id,
        event_time / received_at (contract text format), schema_version, kafka_topic,
        kafka_partition, kafka_offset, updated_at (any comparable value)."""
        raise NotImplementedError

    def rejected_value(self) -> dict[str, Any]:
        """A well-formed record this database refuses to store."""
        raise NotImplementedError

    def retriable_failure(self, sink: UpsertSink) -> AbstractContextManager[None]:
        """While entered, the sink's writes fail with a temporary database error."""
        raise NotImplementedError

    def handled(self, sink: UpsertSink, ingestion_id: str = "ing-1") -> int:
        """The records of ``ingestion_id`` the sink counts as handled (its store's reader)."""
        raise NotImplementedError

    @pytest.fixture
    def dead_letters(self) -> ListDeadLetters:
        return ListDeadLetters()

    @pytest.fixture
    def sink(self, make_sink: MakeSink, dead_letters: ListDeadLetters) -> Iterator[UpsertSink]:
        sink = make_sink(dead_letters)
        sink.setup()
        yield sink
        sink.close()

    def assert_stored(self, sink: UpsertSink, value: dict[str, Any], offset: int) -> None:
        row = self.read_rows(sink)[key_of(value)]
        expected = {
            "name": value["name"],
            "data": value["vertical_data"],
            "source": value["source"],
            "ingestion_id": value["ingestion_id"],
            "event_id": value["event_id"],
            "event_time": value["event_time"],
            "received_at": value["received_at"],
            "schema_version": value["schema_version"],
            "kafka_topic": TOPIC,
            "kafka_partition": 0,
            "kafka_offset": offset,
        }
        assert {name: row[name] for name in expected} == expected

    # --- the cases ---------------------------------------------------------------------

    def test_upsert_is_idempotent(self, sink: UpsertSink, dead_letters: ListDeadLetters) -> None:
        value = record()
        deliver(sink, (0, value))
        deliver(sink, (1, value))  # the same record again, later in the log
        assert list(self.read_rows(sink)) == [key_of(value)]
        self.assert_stored(sink, value, offset=1)
        assert dead_letters.letters == []

    def test_same_offsets_twice_change_nothing(self, sink: UpsertSink) -> None:
        batch = [(10, record("p1")), (11, record("p2", T1))]
        deliver(sink, *batch)
        first = self.read_rows(sink)
        deliver(sink, *batch)  # a redelivery after a crash before the offset commit
        assert self.read_rows(sink) == first  # updated_at too: the rows were not touched
        self.assert_stored(sink, batch[1][1], offset=11)

    def test_older_version_never_overwrites_newer(self, sink: UpsertSink) -> None:
        newer, older = record(event_time=T2, name="new"), record(event_time=T1, name="old")
        deliver(sink, (5, newer))
        deliver(sink, (6, older))  # later in the log, but an older event
        self.assert_stored(sink, newer, offset=5)

    def test_equal_event_time_higher_offset_wins(self, sink: UpsertSink) -> None:
        first, second, third = (record(name=n) for n in ("first", "second", "third"))
        deliver(sink, (7, second))
        deliver(sink, (3, first))  # a replay of an earlier position: ignored
        self.assert_stored(sink, second, offset=7)
        deliver(sink, (9, third))
        self.assert_stored(sink, third, offset=9)

    def test_same_key_twice_in_one_batch(self, sink: UpsertSink) -> None:
        v1, v2, v0 = (
            record(event_time=T1, name="v1"),
            record(event_time=T2, name="v2"),
            record(event_time=T0, name="v0"),
        )
        same_time = record("p2", name="a"), record("p2", name="b")
        deliver(sink, (0, v1), (1, v2), (2, v0), (3, same_time[1]), (4, same_time[0]))
        rows = self.read_rows(sink)
        assert len(rows) == 2
        self.assert_stored(sink, v2, offset=1)
        self.assert_stored(sink, same_time[0], offset=4)

    def test_missing_key_is_dead_lettered_and_the_rest_land(
        self, sink: UpsertSink, dead_letters: ListDeadLetters
    ) -> None:
        keyless = record("p2")
        del keyless["source_id"]
        deliver(
            sink, (0, record("p1")), (1, keyless), (2, ["not", "a", "record"]), (3, record("p3"))
        )
        assert sorted(self.read_rows(sink)) == [key_of(record("p1")), key_of(record("p3"))]
        assert [(d.offset, d.reason) for d in dead_letters.letters] == [
            (1, "malformed record"),
            (2, "malformed record"),
        ]
        assert dead_letters.letters[0].details == [
            {"path": "$.source_id", "message": "required: a non-empty string"}
        ]
        assert dead_letters.letters[0].value == keyless
        assert dead_letters.pending == []  # flushed before write() returned

    def test_large_vertical_data(self, sink: UpsertSink) -> None:
        big = record(vertical_data={"blob": "x" * 1_048_576, "items": list(range(10_000))})
        deliver(sink, (0, big), (1, record("p2")))
        self.assert_stored(sink, big, offset=0)

    def test_unicode_round_trips(self, sink: UpsertSink) -> None:
        # emoji with skin tone and ZWJ, Arabic and Hebrew (RTL), e + combining acute,
        # fullwidth A, sharp s, mathematical fraktur (outside the BMP)
        text = (
            "\U0001f680\U0001f469\U0001f3fd\u200d\U0001f4bb "
            "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd "
            "e\u0301 \uff21 \u00df \U0001d518\U0001d52b\U0001d526"
        )
        value = record(f"id-{text}", name=text, vertical_data={text: [text, {"k": text}]})
        deliver(sink, (0, value))
        self.assert_stored(sink, value, offset=0)

    def test_rejected_row_is_dead_lettered_and_the_rest_land(
        self, sink: UpsertSink, dead_letters: ListDeadLetters
    ) -> None:
        bad = self.rejected_value()
        goods = [record(f"g{i}") for i in range(7)]
        items = [(i, v) for i, v in enumerate(goods[:4])] + [(4, bad)]
        items += [(5 + i, v) for i, v in enumerate(goods[4:])]
        deliver(sink, *items)
        assert sorted(self.read_rows(sink)) == sorted(key_of(v) for v in goods)
        assert len(dead_letters.letters) == 1
        letter = dead_letters.letters[0]
        assert (letter.offset, letter.topic, letter.partition) == (4, TOPIC, 0)
        assert letter.value == bad
        assert letter.key == record_key(*key_of(bad))
        assert ("qanat.replay.count", b"2") in list(letter.headers or [])
        assert letter.reason.startswith("rejected by the database")
        assert letter.details and letter.details[0]["path"] == "$"

    def test_hostile_values_are_stored_or_dead_lettered_and_the_rest_land(
        self, sink: UpsertSink, dead_letters: ListDeadLetters
    ) -> None:
        """Values a database may refuse (issue 16): each is stored or dead-lettered, never
        both, never lost, and the sink goes on with the rest of the batch."""
        deep: Any = 1
        for _ in range(120):
            deep = [deep]
        hostile = [
            record("h-nul-name", name="nul\x00name"),
            record("h-nul-data", vertical_data={"k\x00": "v\x00", "u": "\\u0000"}),
            record("h-nul-id\x00"),
            record("h-big-int", vertical_data={"n": 2**64, "m": -(2**63) - 1}),
            record("h-big-float", vertical_data={"f": 1.7976931348623157e308, "g": 5e-324}),
            record("h-deep", vertical_data={"deep": deep}),
            record("h-surrogate", name="lone \ud800 surrogate"),
            record("h-long-name", name="n" * 100_000),
            record("h-odd-version", schema_version=2**40),
        ]
        goods = [record(f"g{i}") for i in range(3)]
        items = list(enumerate(hostile + goods))
        deliver(sink, *items)
        stored = set(self.read_rows(sink))
        dead = {letter.offset for letter in dead_letters.letters}
        for offset, value in items:
            kept = key_of(value) in stored
            assert kept != (offset in dead), (value["source_id"], kept, offset in dead)
        assert {key_of(v) for v in goods} <= stored

    def test_retriable_error_backpressures_then_succeeds(
        self, sink: UpsertSink, dead_letters: ListDeadLetters
    ) -> None:
        deliver(sink, (0, record("p0")))
        batch = [(1, record("p1")), (2, record("p2"))]
        with self.retriable_failure(sink), pytest.raises(SinkBackpressureError) as raised:
            deliver(sink, *batch)
        assert raised.value.retry_after > 0
        assert list(self.read_rows(sink)) == [key_of(record("p0"))]  # nothing of the batch
        deliver(sink, *batch)  # Quix delivers the batch again after the pause
        assert sorted(self.read_rows(sink)) == [key_of(record(f"p{i}")) for i in range(3)]
        assert dead_letters.letters == []

    def test_partitions_are_written_separately(self, sink: UpsertSink) -> None:
        offsets = itertools.count()
        for partition in (0, 1):
            for i in range(3):
                sink.add(record(f"p{partition}-{i}"), None, 0, [], TOPIC, partition, next(offsets))
        sink.flush()
        rows = self.read_rows(sink)
        assert {row["kafka_partition"] for row in rows.values()} == {0, 1}
        assert len(rows) == 6

    # --- what the sink handled per ingestion (GET /api/v1/ingestions/{id}) ------------

    def test_handled_counts_both_records_of_one_key(self, sink: UpsertSink) -> None:
        v1, v2 = record(event_time=T1, name="v1"), record(event_time=T2, name="v2")
        deliver(sink, (0, v1), (1, v2), (2, record("p2")))
        assert len(self.read_rows(sink)) == 2  # one row per key ...
        assert self.handled(sink) == 3  # ... but three records handled

    def test_handled_ignores_the_same_offsets_twice(self, sink: UpsertSink) -> None:
        batch = [(10, record("p1")), (11, record("p2", T1))]
        deliver(sink, *batch)
        deliver(sink, *batch)  # a redelivery after a crash before the offset commit
        assert self.handled(sink) == 2

    def test_handled_is_exact_with_other_batch_boundaries(self, sink: UpsertSink) -> None:
        items = [(offset, record(f"p{offset % 3}", name=f"n{offset}")) for offset in range(6)]
        deliver(sink, *items[:4])
        deliver(sink, *items[2:])  # redelivered from offset 2, in a batch of another size
        deliver(sink, *items[5:])
        assert self.handled(sink) == 6
        assert self.handled(sink, "ing-other") == 0

    def test_handled_counts_a_version_the_guard_skipped(self, sink: UpsertSink) -> None:
        newer = record(event_time=T2, name="new", ingestion_id="ing-a")
        older = record(event_time=T1, name="old", ingestion_id="ing-b")
        deliver(sink, (5, newer))
        deliver(sink, (6, older))  # later in the log, an older event: not stored
        self.assert_stored(sink, newer, offset=5)
        assert (self.handled(sink, "ing-a"), self.handled(sink, "ing-b")) == (1, 1)

    def test_handled_leaves_dead_letters_out(
        self, sink: UpsertSink, dead_letters: ListDeadLetters
    ) -> None:
        bad, malformed = self.rejected_value(), record("m", name=7)
        goods = [record(f"g{i}") for i in range(5)]
        superseded = record("g0", T0, name="older g0")  # a newer g0 follows in the batch
        items = [(0, superseded), (1, bad), (2, malformed)]
        items += [(3 + i, value) for i, value in enumerate(goods)]
        deliver(sink, *items)
        assert sorted(d.offset for d in dead_letters.letters) == [1, 2]
        assert self.handled(sink) == 6  # the five goods and the superseded g0
        deliver(sink, *items)  # redelivered: the bad row is dead-lettered again, no count
        assert self.handled(sink) == 6

    def test_handled_counts_nothing_of_a_failed_batch(self, sink: UpsertSink) -> None:
        deliver(sink, (0, record("p0")))
        batch = [(1, record("p1")), (2, record("p2"))]
        with self.retriable_failure(sink), pytest.raises(SinkBackpressureError):
            deliver(sink, *batch)
        assert self.handled(sink) == 1
        deliver(sink, *batch)  # Quix delivers the batch again after the pause
        assert self.handled(sink) == 3

    def test_handled_sums_partitions_and_skips_rows_without_ingestion(
        self, sink: UpsertSink
    ) -> None:
        for partition in (0, 1):
            items = [(i, record(f"p{partition}-{i}")) for i in range(3)]
            deliver(
                sink, *items, (3, record(f"x{partition}", ingestion_id=None)), partition=partition
            )
        assert len(self.read_rows(sink)) == 8
        assert self.handled(sink) == 6
