"""What every sink shares: records to rows, version-guarded upserts, error isolation, the DLQ.

:class:`UpsertSink` is a Quix Streams ``BatchingSink``. For each batch (one topic partition,
between two checkpoints) it turns items into :class:`Row` objects, keeps the newest version
of each ``(vertical, type, source_id)`` and hands them to the subclass's :meth:`upsert`, one
transaction. The subclass's SQL replaces a stored row only if
``(event_time, kafka_offset)`` is greater than the stored one, so a redelivery or a replay
never puts old data over new (design.md, "Delivery guarantees"). The same transaction
counts what the batch handled per ingestion (:mod:`sinks.progress`).

Errors, by the kind the subclass raises:

* :class:`~pipelines.core.errors.RetriableError` - ``SinkBackpressureError``: Quix pauses, seeks
  back and delivers the batch again; no offset is committed.
* :class:`~pipelines.core.errors.FatalError` - propagates: the process stops with one message.
* :class:`BadRowError` - the batch is split in halves until each rejected row is alone; the
  good rows land and every rejected row (like every malformed item) becomes a dead letter,
  flushed before :meth:`UpsertSink.write` returns.
"""

from __future__ import annotations

import abc
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch
from quixstreams.sinks.base.item import SinkItem

from pipelines.core.errors import QanatError, RetriableError
from pipelines.core.logs import message_fields
from pipelines.core.metrics import BATCH_SECONDS, count, count_invalid
from sinks.deadletters import (
    STAGE,
    DeadLetter,
    DeadLetterWriter,
    KafkaDeadLetters,
    LoggingDeadLetters,
    letter_fields,
    letter_labels,
)
from sinks.progress import Progress, progress_of

__all__ = ["DeadLetter", "DeadLetterWriter", "KafkaDeadLetters", "LoggingDeadLetters"]

logger = logging.getLogger(__name__)

SQL_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
"""Pattern of table and schema names in sink settings (quoted in SQL all the same)."""

REQUIRED_FIELDS = ("vertical", "type", "source_id", "name", "event_time")
OPTIONAL_TEXT_FIELDS = ("source", "ingestion_id", "event_id", "received_at")


class BadRowError(QanatError):
    """The database refused a row (data exception, integrity violation): it goes to the DLQ."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Row(NamedTuple):
    """One record as a row of the current-state table, with the Kafka position it came from.

    A tuple in ROW_COLUMNS order (cheap to build and to hand to a driver as it is).
    """

    vertical: str
    type: str
    source_id: str
    name: str
    data: dict[str, Any]
    source: str | None
    ingestion_id: str | None
    event_id: str | None
    event_time: str
    received_at: str | None
    schema_version: int | None
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int

    @property
    def version(self) -> tuple[str, int]:
        """What the upsert compares: newer event time wins, then the later position."""
        return (self.event_time, self.kafka_offset)

    def values(self) -> tuple[Any, ...]:
        """The row in ROW_COLUMNS order, ``data`` as JSON text (BadRowError if it cannot be)."""
        return (*self[:4], self.data_json(), *self[5:])

    def data_json(self) -> str:
        """``data`` as JSON text; BadRowError if it cannot be serialized."""
        try:
            return orjson.dumps(self.data).decode()
        except orjson.JSONEncodeError as exc:
            raise BadRowError(f"vertical_data is not serializable: {exc}") from None


ROW_COLUMNS: tuple[str, ...] = Row._fields
"""The columns a Row fills, in order; the stores add ``updated_at``."""
KEY_COLUMNS = ("vertical", "type", "source_id")


def _count_batch(rows: list[Row], rejected: set[int], letters: list[DeadLetter]) -> None:
    """Count the batch's upserted and dead-lettered events, and log each dead letter."""
    upserted = Counter(row[:2] for row in rows if row.kafka_offset not in rejected)
    for (vertical, type_), n in upserted.items():
        count(STAGE, "upserted", vertical, type_, n)
    for letter in letters:
        vertical, type_, _ingestion = letter_labels(letter)
        count(STAGE, "dead_lettered", vertical, type_)
        code = "rejected" if letter.reason.startswith("rejected") else "malformed"
        count_invalid(STAGE, vertical, type_, code)
        logger.warning("dead-lettered: %s", letter.reason, extra=letter_fields(letter))


def _problems(value: Any) -> list[dict[str, str]]:
    """Why an item's value is not a record (empty when it is one)."""
    if not isinstance(value, dict):
        return [{"path": "$", "message": f"expected an object, got {type(value).__name__}"}]
    problems = [
        {"path": f"$.{name}", "message": "required: a non-empty string"}
        for name in REQUIRED_FIELDS
        if not isinstance(value.get(name), str) or not value[name]
    ]
    problems += [
        {"path": f"$.{name}", "message": "must be a string or null"}
        for name in OPTIONAL_TEXT_FIELDS
        if value.get(name) is not None and not isinstance(value[name], str)
    ]
    data = value.get("vertical_data")
    if data is not None and not isinstance(data, dict):
        problems.append({"path": "$.vertical_data", "message": "must be an object or null"})
    version = value.get("schema_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        problems.append({"path": "$.schema_version", "message": "must be an integer or null"})
    return problems


def to_row(value: dict[str, Any], topic: str, partition: int, offset: int) -> Row:
    """A Row from a record that passed validation (see :func:`_problems`)."""
    get = value.get
    return Row(
        value["vertical"],
        value["type"],
        value["source_id"],
        value["name"],
        get("vertical_data") or {},
        get("source"),
        get("ingestion_id"),
        get("event_id"),
        value["event_time"],
        get("received_at"),
        get("schema_version"),
        topic,
        partition,
        offset,
    )


_new_row = tuple.__new__  # Row(...) without the keyword handling of NamedTuple.__new__


def fast_row(value: Any, topic: str, partition: int, offset: int) -> Row | None:
    """The Row of a plainly well-formed record, else None: then :func:`_problems` decides.

    The common case in one pass (exact types only: a subclass takes the detailed path, with
    the same outcome); never accepts what :func:`_problems` would refuse.
    """
    if type(value) is not dict:
        return None
    get = value.get
    vertical, type_, source_id = get("vertical"), get("type"), get("source_id")
    name, event_time, data = get("name"), get("event_time"), get("vertical_data")
    source, ingestion_id, event_id = get("source"), get("ingestion_id"), get("event_id")
    received_at, version = get("received_at"), get("schema_version")
    if (
        type(vertical) is str
        and type(type_) is str
        and type(source_id) is str
        and type(name) is str
        and type(event_time) is str
        and vertical
        and type_
        and source_id
        and name
        and event_time
        and (source is None or type(source) is str)
        and (ingestion_id is None or type(ingestion_id) is str)
        and (event_id is None or type(event_id) is str)
        and (received_at is None or type(received_at) is str)
        and (data is None or type(data) is dict)
        and (version is None or type(version) is int)
    ):
        return _new_row(
            Row,
            (
                vertical,
                type_,
                source_id,
                name,
                data or {},
                source,
                ingestion_id,
                event_id,
                event_time,
                received_at,
                version,
                topic,
                partition,
                offset,
            ),
        )
    return None


def newest_per_key(rows: list[Row]) -> list[Row]:
    """One row per (vertical, type, source_id): the newest by (event_time, kafka_offset)."""
    newest: dict[tuple[str, ...], Row] = {}
    setdefault = newest.setdefault
    for row in rows:
        kept = setdefault(row[:3], row)
        if kept is not row and (row[8], row[13]) > (kept[8], kept[13]):  # Row.version
            newest[row[:3]] = row
    return rows if len(newest) == len(rows) else list(newest.values())


@contextmanager
def backpressure_on_retriable(batch: SinkBatch) -> Iterator[None]:
    """Turn a RetriableError into ``SinkBackpressureError``: Quix pauses, seeks back and
    delivers the batch again, committing nothing."""
    try:
        yield
    except RetriableError as exc:
        where = f"{batch.topic}[{batch.partition}] from offset {batch.start_offset}"
        logger.warning("%s will be retried in %.1fs: %s", where, exc.retry_after, exc)
        raise SinkBackpressureError(retry_after=exc.retry_after) from exc


class UpsertSink(BatchingSink, abc.ABC):
    """Base of the datastore sinks; subclasses implement :meth:`setup` and :meth:`upsert`.

    ``dead_letters`` receives rejected and malformed items (default: logged). A subclass
    opens its connection in :meth:`setup`, creating the tables when ``create_tables``.
    """

    def __init__(
        self,
        *,
        dead_letters: DeadLetterWriter | None = None,
        create_tables: bool = True,
        **quix_options: Any,
    ) -> None:
        super().__init__(**quix_options)
        self.dead_letters: DeadLetterWriter = dead_letters or LoggingDeadLetters()
        self.create_tables = create_tables

    @abc.abstractmethod
    def setup(self) -> None:
        """Open the connection (Quix calls it at start), creating tables if ``create_tables``."""

    def flush(self) -> None:
        """Write each partition's batch (:meth:`write`); Quix calls it at every checkpoint."""
        super().flush()  # type: ignore[no-untyped-call]

    @abc.abstractmethod
    def upsert(self, rows: list[Row], progress: Sequence[Progress] = ()) -> None:
        """Write ``rows`` (unique keys) in one transaction with the version guard, and add
        ``progress`` (:mod:`sinks.progress`) in the same transaction.

        Raise RetriableError, FatalError or BadRowError; nothing is kept on error.
        """

    def close(self) -> None:
        """Release the connection (subclasses extend it)."""

    def write(self, batch: SinkBatch) -> None:
        started = time.perf_counter()
        rows: list[Row] = []
        letters: list[DeadLetter] = []
        topic, partition = batch.topic, batch.partition
        for item in batch:
            value = item.value
            row = fast_row(value, topic, partition, item.offset)
            if row is None:
                problems = _problems(value)
                if problems:
                    letters.append(self._letter(item, batch, "malformed record", problems))
                    continue
                row = to_row(value, topic, partition, item.offset)
            rows.append(row)
        with backpressure_on_retriable(batch):
            rejected = self._upsert_isolating(newest_per_key(rows), rows) if rows else []
            if rejected:
                items = {item.offset: item for item in batch}
                for row, error in rejected:
                    code = f" ({error.code})" if error.code else ""
                    details = [{"path": "$", "message": str(error)}]
                    item = items[row.kafka_offset]
                    letters.append(
                        self._letter(item, batch, "rejected by the database" + code, details)
                    )
            if letters:
                for letter in letters:
                    self.dead_letters.send(letter)
                self.dead_letters.flush()
        _count_batch(rows, {row.kafka_offset for row, _error in rejected}, letters)
        BATCH_SECONDS.labels(stage=STAGE).observe(time.perf_counter() - started)
        logger.debug("%s[%d]: %d stored or dead", batch.topic, batch.partition, batch.size)

    def _upsert_isolating(self, rows: list[Row], batch: list[Row]) -> list[tuple[Row, BadRowError]]:
        """Upsert ``rows`` with the progress of the ``batch`` they came from; around rejected
        rows, split, then add the progress of the rest on its own. Returns the rejected."""
        try:
            self.upsert(rows, progress_of(batch))
            return []
        except BadRowError as exc:
            rejected = self._isolate(rows, exc)
        rest = progress_of(batch, {row.kafka_offset for row, _error in rejected})
        if rest:
            self.upsert([], rest)
        return rejected

    def _isolate(self, rows: list[Row], error: BadRowError) -> list[tuple[Row, BadRowError]]:
        """Split ``rows`` (their upsert raised ``error``) in halves until each rejected row
        is alone; the others land. Returns each rejected row."""
        if len(rows) == 1:
            row = rows[0]
            where = message_fields(
                row.kafka_topic, row.kafka_partition, row.kafka_offset, row.ingestion_id
            )
            logger.info("row at offset %d rejected: %s", row.kafka_offset, error, extra=where)
            return [(row, error)]
        rejected = []
        for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
            try:
                self.upsert(half)
            except BadRowError as exc:
                rejected += self._isolate(half, exc)
        return rejected

    @staticmethod
    def _letter(
        item: SinkItem, batch: SinkBatch, reason: str, details: list[dict[str, Any]]
    ) -> DeadLetter:
        where = (batch.topic, batch.partition, item.offset)
        return DeadLetter(item.key, item.value, item.headers, *where, reason, details)
