"""Reading the errors table: the :class:`ErrorStore` interface that the ingestion routes
(``GET /api/v1/ingestions/{id}`` and ``/errors``) call, and what its stores share: the SQL
templates and how their rows become answers.

The writing side (the errors sink and the table's columns) is :mod:`sinks.errors`; the
stores are ``SQLiteErrorStore`` (:mod:`sinks.sqlite.errors`) and ``PostgresErrorStore``
(:mod:`sinks.postgres.errors`). Each fills a template with its quoted table and
placeholder, and hands the rows to :func:`counts_result` and :func:`error_result`:

>>> TOTAL_SQL.format(table='"record_errors"', p="?").split(" FROM ")[1]
'"record_errors" WHERE ingestion_id = ?'
>>> counts_result("ing-1", (2, 3), [("validate", 1, 2), (None, 1, 1)])["by_stage"]
{'validate': 1, 'unknown': 1}
>>> answer = error_result("ing-1", {"stage": "parse", "payload": b"\\xff", "raw_key": b"k"})
>>> answer["payload"], answer["payload_encoding"], answer["key"], answer["key_encoding"]
('/w==', 'base64', 'k', 'utf-8')
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

UNKNOWN_STAGE = "unknown"
"""The ``by_stage`` key of dead letters without a stage header."""


class ErrorStore(Protocol):
    """What the ingestion routes read; RetriableError when the database is unavailable."""

    def counts(self, ingestion_id: str) -> dict[str, Any]:
        """``{"ingestion_id", "invalid", "dead_letters", "by_stage": {stage: invalid}}``."""
        ...

    def errors(self, ingestion_id: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """The ingestion's dead letters, oldest error first (see :data:`ERROR_FIELDS`)."""
        ...

    def close(self) -> None: ...


DISTINCT_EVENTS = "COUNT(DISTINCT event_id) + COUNT(*) FILTER (WHERE event_id IS NULL)"
"""Invalid events: a replayed event that fails again is one; a letter without id is one."""
COUNTS_SQL = (
    f"SELECT stage, {DISTINCT_EVENTS}, COUNT(*) FROM {{table}} "
    "WHERE ingestion_id = {p} GROUP BY stage"
)
TOTAL_SQL = f"SELECT {DISTINCT_EVENTS}, COUNT(*) FROM {{table}} WHERE ingestion_id = {{p}}"
_SELECTED = (
    "event_id",
    "vertical",
    "type",
    "source",
    "stage",
    "reason",
    "details",
    "payload",
    "raw_key",
    "received_at",
    "error_at",
    "stored_at",
    "replay_count",
    "source_topic",
    "source_partition",
    "source_offset",
    "dlq_topic",
    "dlq_partition",
    "dlq_offset",
)
ERRORS_SQL = (
    f"SELECT {', '.join(_SELECTED)} FROM {{table}} WHERE ingestion_id = {{p}} "
    "ORDER BY error_at NULLS LAST, dlq_topic, dlq_partition, dlq_offset LIMIT {p} OFFSET {p}"
)
"""Templates shared by the stores: ``{table}`` is the quoted table, ``{p}`` a placeholder."""
ERROR_FIELDS = (
    "ingestion_id",
    *(name for name in _SELECTED if name not in ("payload", "raw_key")),
    "payload",
    "payload_encoding",
    "key",
    "key_encoding",
)
"""The keys of each dict :meth:`ErrorStore.errors` returns; times are RFC 3339 text, and
``payload`` / ``key`` are text when the bytes are UTF-8 (encoding ``utf-8``), else base64
(encoding ``base64``), or None (encoding None)."""


def as_text(raw: bytes | None) -> tuple[str | None, str | None]:
    """Bytes for a JSON answer: ``(text, "utf-8")`` or ``(base64, "base64")``.

    >>> as_text(b"caf\\xc3\\xa9"), as_text(b"\\xff"), as_text(None)
    (('café', 'utf-8'), ('/w==', 'base64'), (None, None))
    """
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def counts_result(
    ingestion_id: str, total: Sequence[Any] | None, by_stage: Iterable[Sequence[Any]]
) -> dict[str, Any]:
    """The :meth:`ErrorStore.counts` answer from the rows of TOTAL_SQL and COUNTS_SQL."""
    invalid, letters = (int(total[0] or 0), int(total[1] or 0)) if total else (0, 0)
    return {
        "ingestion_id": ingestion_id,
        "invalid": invalid,
        "dead_letters": letters,
        "by_stage": {stage or UNKNOWN_STAGE: int(n) for stage, n, _rows in by_stage},
    }


def error_result(ingestion_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """One :meth:`ErrorStore.errors` item from a row of ERRORS_SQL (times already text)."""
    payload, payload_encoding = as_text(row.pop("payload"))
    key, key_encoding = as_text(row.pop("raw_key"))
    result = {"ingestion_id": ingestion_id, **row}
    result |= {"payload": payload, "payload_encoding": payload_encoding}
    result |= {"key": key, "key_encoding": key_encoding}
    return result


def check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
