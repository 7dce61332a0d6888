"""The errors sink: dead letters from ``<prefix>.dlq`` into an errors table, and its reader.

Every dead letter becomes one row of ``record_errors`` (design.md, "Datastore"): the
contract headers (ingestion id, event id, vertical, type, source, received at), the error
headers (stage, reason, details, at, where it was read, replay count), the raw key and
value exactly as they were, and where the row was read from the DLQ. That DLQ position is
the primary key, so a redelivered dead letter is stored once. A header that is missing or
unreadable (a poison message) is stored as NULL; every header is also kept, as text, in
the ``headers`` column, so nothing is lost.

The stores: :mod:`sinks.sqlite.errors` and :mod:`sinks.postgres.errors`. Each has a sink
(``SQLiteErrorsSink``, ``PostgresErrorsSink``) and a reader (``SQLiteErrorStore``,
``PostgresErrorStore``) with the :class:`sinks.errorstore.ErrorStore` interface that the
ingestion routes (``GET /api/v1/ingestions/{id}`` and ``/errors``) call; this module is
the writing side, :mod:`sinks.errorstore` the reading side.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields, replace
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from quixstreams.sinks import BatchingSink, SinkBatch

from pipelines.core.config import QanatSettings
from pipelines.core.errors import FatalError
from pipelines.core.metrics import BATCH_SECONDS, count
from pipelines.core.records import parse_time
from pipelines.core.topics import (
    H_ERROR_AT,
    H_ERROR_DETAILS,
    H_ERROR_OFFSET,
    H_ERROR_PARTITION,
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_ERROR_TOPIC,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_REPLAY_COUNT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    decode_headers,
)
from sinks.base import SQL_IDENTIFIER, BadRowError, backpressure_on_retriable

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class ErrorsSinkSettings(QanatSettings):
    """Settings of ``qanat sink errors`` (env ``QANAT_ERRORS_*``, YAML section ``errors``).

    The database itself is the store's own settings (``QANAT_SQLITE_*`` or
    ``QANAT_POSTGRES_*``), so errors land next to the records by default.
    """

    yaml_section: ClassVar[str] = "errors"
    model_config = SettingsConfigDict(env_prefix="QANAT_ERRORS_", extra="forbid")

    table: str = Field(
        "record_errors",
        pattern=SQL_IDENTIFIER,
        description="Table of dead letters, one row per DLQ message, indexed by ingestion id.",
    )
    ingestions_table: str = Field(
        "ingestions",
        pattern=SQL_IDENTIFIER,
        description="Table of ingestion summaries (how many events each ingestion put in "
        "Kafka), one row per ingestion id, from the <prefix>.ingestions topic.",
    )


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """One dead letter as a row of the errors table (columns in this order)."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    ingestion_id: str | None
    event_id: str | None
    vertical: str | None
    type: str | None
    source: str | None
    stage: str | None
    reason: str | None
    details: Any  # parsed JSON; the header's text as a JSON string when it is not JSON
    payload: bytes | None
    raw_key: bytes | None
    headers: dict[str, str]
    received_at: datetime | None
    error_at: datetime | None
    replay_count: int | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.dlq_topic, self.dlq_partition, self.dlq_offset)

    def values(self) -> tuple[Any, ...]:
        return astuple(self)


COLUMNS = tuple(f.name for f in fields(ErrorRow))
"""The columns an ErrorRow fills, in order; the stores add ``stored_at``."""
KEY_COLUMNS = ("dlq_topic", "dlq_partition", "dlq_offset")


def _text(value: str) -> str:
    """Text a database can hold: U+0000 (refused by PostgreSQL) becomes U+FFFD."""
    return value.replace("\x00", "\ufffd")


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): _clean_json(v) for k, v in value.items()}
    return value


def _json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return _clean_json(orjson.loads(value))
    except orjson.JSONDecodeError:
        return _text(value)  # kept, as a JSON string


def _int(value: str | None, maximum: int) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number <= maximum else None


def _time(value: str | None) -> datetime | None:
    try:
        return parse_time(value) if value is not None else None
    except (ValueError, OverflowError, OSError):
        return None


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")  # a deserializer other than "bytes" was configured


def error_row(
    key: Any,
    value: Any,
    headers: Iterable[tuple[str, Any]] | None,
    topic: str,
    partition: int,
    offset: int,
) -> ErrorRow:
    """The row of the dead letter read at ``topic[partition]@offset``; never raises.

    >>> row = error_row(b"k", b"\\xff", [("qanat.error.stage", b"parse")], "qanat.dlq", 0, 9)
    >>> row.stage, row.ingestion_id, row.payload, row.position
    ('parse', None, b'\\xff', ('qanat.dlq', 0, 9))
    """
    h = {_text(name): _text(text) for name, text in decode_headers(headers).items()}
    get = h.get
    return ErrorRow(
        dlq_topic=topic,
        dlq_partition=partition,
        dlq_offset=offset,
        ingestion_id=get(H_INGESTION_ID),
        event_id=get(H_EVENT_ID),
        vertical=get(H_VERTICAL),
        type=get(H_TYPE),
        source=get(H_SOURCE),
        stage=get(H_ERROR_STAGE),
        reason=get(H_ERROR_REASON),
        details=_json(get(H_ERROR_DETAILS)),
        payload=_bytes(value),
        raw_key=_bytes(key),
        headers=h,
        received_at=_time(get(H_RECEIVED_AT)),
        error_at=_time(get(H_ERROR_AT)),
        replay_count=_int(get(H_REPLAY_COUNT), INT32_MAX),
        source_topic=get(H_ERROR_TOPIC),
        source_partition=_int(get(H_ERROR_PARTITION), INT32_MAX),
        source_offset=_int(get(H_ERROR_OFFSET), INT64_MAX),
    )


class ErrorsSink(BatchingSink, abc.ABC):
    """Base of the errors sinks: one idempotent insert of each batch's dead letters.

    Read the DLQ topic with the ``bytes`` key and value deserializers, so that the raw
    payload is stored exactly. A subclass implements :meth:`setup`, :meth:`store` and
    :meth:`close`; :meth:`store` raises RetriableError (the batch is retried: Quix's
    ``SinkBackpressureError``) or FatalError. Rows are built so that a store cannot refuse
    one; if it does all the same (BadRowError), the sink stops instead of losing it.
    Examples: :class:`sinks.sqlite.errors.SQLiteErrorsSink`,
    :class:`sinks.postgres.errors.PostgresErrorsSink`.
    """

    def __init__(self, *, create_tables: bool = True, **quix_options: Any) -> None:
        super().__init__(**quix_options)
        self.create_tables = create_tables

    @abc.abstractmethod
    def setup(self) -> None:
        """Open the connection (Quix calls it at start), creating tables if ``create_tables``."""

    @abc.abstractmethod
    def store(self, rows: list[ErrorRow]) -> None:
        """Insert ``rows`` (unique positions) in one transaction; a stored position is kept."""

    def close(self) -> None:
        """Release the connection (subclasses extend it)."""

    def flush(self) -> None:
        """Write each partition's batch (:meth:`write`); Quix calls it at every checkpoint."""
        super().flush()  # type: ignore[no-untyped-call]

    def write(self, batch: SinkBatch) -> None:
        started = time.perf_counter()
        rows: dict[tuple[str, int, int], ErrorRow] = {}
        for item in batch:
            row = error_row(
                item.key, item.value, item.headers, batch.topic, batch.partition, item.offset
            )
            rows[row.position] = row
        with backpressure_on_retriable(batch):
            try:
                self.store(list(rows.values()))
            except BadRowError:
                self._store_one_by_one(list(rows.values()))
        BATCH_SECONDS.labels(stage="errors").observe(time.perf_counter() - started)
        logger.debug("%s[%d]: %d dead letter(s) stored", batch.topic, batch.partition, len(rows))

    def _store_one_by_one(self, rows: list[ErrorRow]) -> None:
        """A refused batch, row by row: a row the table refuses is stored reduced (its text
        ASCII-escaped, its details replaced by the refusal), so the letter is kept and the
        sink goes on; only a reduced row refused too stops it (the table is broken)."""
        for row in rows:
            try:
                self.store([row])
            except BadRowError as exc:
                try:
                    self.store([reduced_row(row, str(exc))])
                except BadRowError as again:
                    where = "{}[{}]@{}".format(*row.position)
                    message = f"the errors table refused the dead letter at {where}: {again}"
                    raise FatalError(message) from again
                count("errors", "stored_reduced", row.vertical or "-", row.type or "-")
                logger.warning("dead letter %s stored reduced: %s", row.position, exc)


def reduced_row(row: ErrorRow, refusal: str) -> ErrorRow:
    """``row`` as any table takes it: every text ASCII (``\\uXXXX`` escapes), the details
    a note of why the full row was refused; the payload's bytes stay exact.

    >>> row = error_row(b"k", b"v", [("qanat.error.reason", "caf\u00e9".encode())], "d", 0, 1)
    >>> reduced = reduced_row(row, "22021")
    >>> reduced.reason.isascii(), len(reduced.reason), reduced.payload
    (True, 7, b'v')
    """
    texts: dict[str, Any] = {
        f.name: _ascii(getattr(row, f.name))
        for f in fields(ErrorRow)
        if isinstance(getattr(row, f.name), str)
    }
    headers = {_ascii(name): _ascii(value) for name, value in row.headers.items()}
    details = [{"path": "$", "message": f"stored reduced: {_ascii(refusal)[:500]}"}]
    return replace(row, **texts, headers=headers, details=details)


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
