"""What a records sink handled per ingestion, for ``GET /api/v1/ingestions/{id}``.

The records table keeps one row per key, so counting its rows by ``ingestion_id`` misses
a record superseded in its batch, one the version guard skipped, and every row a later
ingestion updated. So the sink also counts, in a table beside the records table
(:func:`progress_table`), the records it *handled* (upserted, or superseded by a newer
version) per ``(ingestion_id, kafka_topic, kafka_partition)``, with the last offset
counted: a partition's offsets arrive in order, so counting only offsets above
``last_offset`` makes a redelivery (same offsets, or other batch boundaries) add nothing.
Dead-lettered rows are left out (the errors sink counts them as invalid), and the count
is written in the upsert's transaction: a batch rolled back counts nothing. Each store
writes and reads its table its own way: :mod:`sinks.sqlite.progress`,
:mod:`sinks.postgres.progress`.

>>> progress_table("records")
'records_ingestion_progress'
>>> progress_of([])
[]
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import NamedTuple, Protocol

from pipelines.core.records import valid_ingestion_id


class Positioned(Protocol):
    """What progress needs of a row (:class:`sinks.base.Row` is one): its ingestion and the
    Kafka position it came from."""

    @property
    def ingestion_id(self) -> str | None: ...
    @property
    def kafka_topic(self) -> str: ...
    @property
    def kafka_partition(self) -> int: ...
    @property
    def kafka_offset(self) -> int: ...


SUFFIX = "_ingestion_progress"
MAX_IDENTIFIER = 63  # PostgreSQL's limit on a name


class Progress(NamedTuple):
    """One ingestion's handled rows in one topic partition: their offsets as ascending,
    disjoint runs ``(first, last)`` (few: an ingestion's records mostly follow each other)."""

    ingestion_id: str
    kafka_topic: str
    kafka_partition: int
    runs: list[tuple[int, int]]

    @property
    def last_offset(self) -> int:
        return self.runs[-1][1]

    def counted_after(self, last_offset: int | None) -> int:
        """How many of the offsets lie above ``last_offset`` (None: all of them).

        >>> Progress("i", "t", 0, [(1, 3), (7, 7)]).counted_after(2)
        2
        """
        floor = -1 if last_offset is None else last_offset
        return sum(last - max(first, floor + 1) + 1 for first, last in self.runs if last > floor)


def runs_of(offsets: list[int]) -> list[tuple[int, int]]:
    """``offsets`` (any order, no repeats) as ascending runs of consecutive offsets.

    >>> runs_of([5, 1, 2, 3, 9, 10])
    [(1, 3), (5, 5), (9, 10)]
    """
    offsets = sorted(offsets)
    if offsets and offsets[-1] - offsets[0] + 1 == len(offsets):
        return [(offsets[0], offsets[-1])]  # the common case: one run
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and offset == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


def progress_table(table: str) -> str:
    """The progress table of records table ``table`` (a hash keeps a long name unique)."""
    name = table + SUFFIX
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: MAX_IDENTIFIER - len(SUFFIX) - 9]}_{digest}{SUFFIX}"


def progress_of(rows: Sequence[Positioned], skip: Collection[int] = ()) -> list[Progress]:
    """The batch's rows with an ingestion id, grouped; ``skip``: offsets dead-lettered."""
    groups: defaultdict[tuple[str | None, str, int], list[int]] = defaultdict(list)
    for row in rows:
        groups[row.ingestion_id, row.kafka_topic, row.kafka_partition].append(row.kafka_offset)
    progress = []
    for (ingestion_id, topic, partition), offsets in groups.items():
        if ingestion_id is None or not valid_ingestion_id(ingestion_id):
            continue
        kept = [offset for offset in offsets if offset not in skip] if skip else offsets
        if kept:
            progress.append(Progress(ingestion_id, topic, partition, runs_of(kept)))
    return progress
