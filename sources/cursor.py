"""Cursor values in a checkpoint: a pull source's last (cursor, key) pair as JSON that
restores the database's own types (a timestamp stays a timestamp), so the next keyset query
compares like with like. Used by the SQL and Neo4j pull sources.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pipelines.core.errors import ConfigError


def encode_cursor_value(value: Any) -> Any:
    """A cursor column's value as JSON, typed so :func:`decode_cursor_value` restores it.

    >>> encode_cursor_value(datetime(2026, 1, 2, 3, 4, 5, 6))
    {'datetime': '2026-01-02T03:04:05.000006'}
    >>> decode_cursor_value(encode_cursor_value(Decimal("1.50")))
    Decimal('1.50')
    """
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"a cursor column cannot be {type(value).__name__}")
    if isinstance(value, int | float | str):
        return value
    for kind, cls in _TYPED:
        if isinstance(value, cls):
            return {kind: value.isoformat() if hasattr(value, "isoformat") else str(value)}
    raise ConfigError(f"unsupported cursor column type {type(value).__name__}")


# datetime before date: a datetime is a date too.
_TYPED: tuple[tuple[str, type], ...] = (
    ("datetime", datetime),
    ("date", date),
    ("time", time),
    ("decimal", Decimal),
    ("uuid", UUID),
)
_DECODE = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": UUID,
}


def decode_cursor_value(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, text),) = value.items()
        return _DECODE[kind](text)
    return value
