"""What UpsertSink does around any database: DLQ durability, error kinds, de-duplication."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from quixstreams.sinks import SinkBackpressureError

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError, RetriableError
from sinks.base import DeadLetter, KafkaDeadLetters, LoggingDeadLetters, newest_per_key, to_row
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings
from tests.sinks.conformance import T0, T1, ListDeadLetters, deliver, record


class FlakyDeadLetters(ListDeadLetters):
    """The DLQ is unavailable for the first ``failures`` flushes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            self.pending.clear()  # what a failed producer flush leaves unacknowledged
            raise RetriableError("DLQ unavailable", retry_after=2.5)
        super().flush()


def sqlite_sink(tmp_path: Path, dead_letters: ListDeadLetters | None = None) -> SQLiteSink:
    sink = SQLiteSink(SQLiteSinkSettings(path=tmp_path / "q.db"), dead_letters=dead_letters)
    sink.setup()
    return sink


def test_dlq_failure_backpressures_and_the_redelivery_completes(tmp_path: Path) -> None:
    dead = FlakyDeadLetters(failures=1)
    sink = sqlite_sink(tmp_path, dead)
    batch = [(0, record("a")), (1, "not a record"), (2, record("b"))]
    with pytest.raises(SinkBackpressureError) as raised:
        deliver(sink, *batch)
    assert raised.value.retry_after == 2.5
    deliver(sink, *batch)  # redelivered: the upserts are no-ops, the letter is sent again
    assert [letter.offset for letter in dead.letters] == [1]
    sink.close()


def test_fatal_database_error_propagates(tmp_path: Path) -> None:
    sink = sqlite_sink(tmp_path)
    with sqlite3.connect(sink.settings.path) as other:
        other.execute("DROP TABLE records")  # a person must recreate it: retrying is useless
    with pytest.raises(FatalError, match="no such table"):
        deliver(sink, (0, record()))
    sink.close()


def test_without_a_writer_dead_letters_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = sqlite_sink(tmp_path)
    assert isinstance(sink.dead_letters, LoggingDeadLetters)
    deliver(sink, (0, {"vertical": "shop"}))
    assert "dead letter qanat.records[0]@0" in caplog.text
    sink.close()


def test_newest_per_key_by_event_time_then_offset() -> None:
    rows = [
        to_row(record("a", T1, name="newer"), "t", 0, 1),
        to_row(record("a", T0, name="older"), "t", 0, 2),
        to_row(record("b", T0, name="first"), "t", 0, 3),
        to_row(record("b", T0, name="later"), "t", 0, 4),
    ]
    assert sorted(r.name for r in newest_per_key(rows)) == ["later", "newer"]


def test_unacknowledged_dead_letters_are_retriable() -> None:
    writer = KafkaDeadLetters(KafkaSettings(bootstrap_servers="127.0.0.1:1"), flush_timeout=0.5)
    writer.send(DeadLetter("k", {"a": 1}, None, "qanat.records", 0, 7, "malformed record"))
    with pytest.raises(RetriableError, match="unacknowledged"):
        writer.flush()
