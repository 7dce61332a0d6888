"""Purging dead letters. Kafka cannot delete one record, so a purge does three things:

1. It stores a purge rule (:class:`pipelines.dlq.state.PurgeRule`: the filter and the DLQ
   end offsets now) in ``<prefix>.dlq-state``: every ``qanat dlq`` command and the HTTP
   routes skip the dead letters it covers, and no replay republishes them.
2. "Older than" only (``--before``, no other filter): per partition, the run of oldest
   dead letters that are all older than the cutoff is deleted from the topic for real
   (``AdminClient.delete_records``: the partition's log start moves past them).
3. With an errors store (``record_errors`` of the errors sink, SQLite or PostgreSQL), the
   rows of the purged dead letters are deleted, by their DLQ position. The errors sink
   owns that table; these deletes are this module's own (it imports no connector): a
   dead letter the errors sink stores only after the purge (a lagging sink) stays.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.records import now
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.read import DlqScanner, Positions
from pipelines.dlq.state import DlqState, PurgeRule, write_state

Position = tuple[int, int]


class ErrorRows(Protocol):
    """Deletes the errors table's rows of some dead letters; returns how many it deleted."""

    def delete(self, topic: str, positions: list[Position]) -> int: ...


@dataclass
class PurgePlan:
    """What a purge would do: the letters it covers, and what the topic can forget."""

    filter: DlqFilter
    positions: list[Position] = field(default_factory=list)
    ends: Positions = field(default_factory=dict)
    truncate: Positions = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.positions)


def plan_purge(kafka: KafkaSettings, wanted: DlqFilter, timeout: float = 15.0) -> PurgePlan:
    """Scan the DLQ for what ``wanted`` covers (letters purged before are left out)."""
    state = DlqState.load(kafka, timeout)
    plan = PurgePlan(wanted)
    with DlqScanner(kafka, timeout) as scanner:
        ranges = scanner.ranges(wanted)
        plan.ends = {p: r.stop for p, r in ranges.items()}
        in_prefix = {p: r.start == scanner_low(scanner, p) for p, r in ranges.items()}
        for letter in scanner.scan(ranges, ordered=False):
            matched = wanted.matches(letter)
            if matched and not state.is_purged(letter):
                plan.positions.append((letter.partition, letter.offset))
            if wanted.time_only and in_prefix[letter.partition]:
                if matched:
                    plan.truncate[letter.partition] = letter.offset + 1
                else:
                    in_prefix[letter.partition] = False
    return plan


def scanner_low(scanner: DlqScanner, partition: int) -> int:
    tp = TopicPartition(scanner.topic, partition)
    return int(scanner.consumer.get_watermark_offsets(tp, scanner.timeout, cached=False)[0])


def apply_purge(
    kafka: KafkaSettings, plan: PurgePlan, rows: ErrorRows | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Store the purge rule, cut the topic (older-than only), delete the errors rows."""
    rule = PurgeRule(uuid.uuid4().hex, plan.filter, plan.ends, now())
    write_state(kafka, rule.key, rule.to_json(), timeout)
    truncated = _delete_records(kafka, plan.truncate, timeout) if plan.truncate else 0
    deleted = rows.delete(kafka.topics.dlq, plan.positions) if rows is not None else None
    return {
        "purge_id": rule.id,
        "purged": plan.count,
        "deleted_from_topic": truncated,
        "deleted_rows": deleted,
    }


def _delete_records(kafka: KafkaSettings, upto: Positions, timeout: float) -> int:
    admin = AdminClient(kafka.client())
    wanted = [TopicPartition(kafka.topics.dlq, p, o) for p, o in sorted(upto.items())]
    with DlqScanner(kafka, timeout) as scanner:
        before = {p: scanner_low(scanner, p) for p in upto}
    futures = admin.delete_records(wanted, request_timeout=timeout)
    for tp, future in futures.items():
        try:
            future.result(timeout)
        except Exception as exc:
            raise FatalError(f"delete_records on {tp.topic}[{tp.partition}]: {exc}") from exc
    return sum(max(0, o - before[p]) for p, o in upto.items())


def _chunks(positions: list[Position], size: int = 500) -> Iterable[list[Position]]:
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


class SQLiteErrorRows:
    """The errors table (``record_errors``) in a SQLite file.

    >>> SQLiteErrorRows(Path("/nonexistent/x.db"), "record_errors").table
    'record_errors'
    """

    def __init__(self, path: Path, table: str) -> None:
        self.path, self.table = path, table

    def delete(self, topic: str, positions: list[Position]) -> int:
        if not self.path.exists():
            raise FatalError(f"no SQLite database at {self.path}")
        quoted = '"' + self.table.replace('"', '""') + '"'
        statement = (
            f"DELETE FROM {quoted} WHERE dlq_topic = ? AND dlq_partition = ? AND dlq_offset = ?"
        )
        try:
            with sqlite3.connect(self.path, timeout=30) as conn:
                before = conn.total_changes
                conn.executemany(statement, ((topic, p, o) for p, o in positions))
                return conn.total_changes - before
        except sqlite3.OperationalError as exc:
            raise RetriableError(f"SQLite: {exc}") from exc


class PostgresErrorRows:
    """The errors table (``record_errors``) in PostgreSQL."""

    def __init__(self, dsn: str, schema: str, table: str) -> None:
        self.dsn, self.schema, self.table = dsn, schema, table

    def delete(self, topic: str, positions: list[Position]) -> int:
        import psycopg
        from psycopg import sql

        statement = sql.SQL(
            "DELETE FROM {} WHERE dlq_topic = %s AND dlq_partition = %s AND dlq_offset = %s"
        ).format(sql.Identifier(self.schema, self.table))
        deleted = 0
        try:
            with psycopg.connect(self.dsn) as conn, conn.cursor() as cursor:
                for chunk in _chunks(positions):
                    for partition, offset in chunk:
                        cursor.execute(statement, (topic, partition, offset))
                        deleted += cursor.rowcount
        except psycopg.OperationalError as exc:
            raise RetriableError(f"PostgreSQL: {exc}") from exc
        return deleted
