"""Which dead letters a ``qanat dlq`` command (or ``/api/v1/dlq`` request) is about.

:class:`DlqFilter` holds the conditions (vertical, type, stage, reason, header values,
ingestion, time window, partitions and offsets, the verticals an API key may use), every
given one must hold; it travels as JSON in a replay job and in a purge rule.
:func:`parse_when` and :func:`parse_header_matches` read the command-line forms of the time
and header conditions; :func:`select` applies a filter to the letters a scan reads
(:mod:`pipelines.dlq.read`), :func:`stats` counts them.

>>> letter = DeadLetter(0, 7, 0, b"k", b"{}", [("qanat.vertical", b"shop"),
...     ("qanat.error.stage", b"validate"), ("qanat.error.reason", b"schema failed")])
>>> DlqFilter(vertical="shop", reason="SCHEMA").matches(letter)
True
>>> DlqFilter(stage="parse").matches(letter)
False
>>> stats(select([letter], DlqFilter(vertical="shop")))["by_reason"]
{'schema failed': 1}
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipelines.core.records import format_time, parse_time
from pipelines.core.topics import H_ERROR_STAGE, H_INGESTION_ID, H_TYPE, H_VERTICAL
from pipelines.dlq.letter import DeadLetter

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time, or a duration ago (``30m``, ``12h``, ``7d``, ``2w``).

    >>> parse_when("2h", datetime(2026, 1, 1, 12, tzinfo=UTC)).isoformat()
    '2026-01-01T10:00:00+00:00'
    """
    found = _RELATIVE.match(text.strip())
    if found:
        delta = timedelta(**{_UNITS[found[2]]: int(found[1])})
        return (now or datetime.now(UTC)) - delta
    try:
        return parse_time(text.strip())
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is neither an RFC 3339 time nor a duration like 7d") from exc


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters a command is about; every given condition must hold.

    ``reason`` is a case-insensitive substring; ``headers`` exact header values; ``since``
    / ``until`` bound :attr:`DeadLetter.time` (until: exclusive); ``from_offset`` /
    ``to_offset`` (inclusive) apply in every selected partition; ``verticals`` (None: any)
    is the set an API key may use.
    """

    vertical: str | None = None
    type: str | None = None
    stage: str | None = None
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    ingestion_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    verticals: tuple[str, ...] | None = None
    _equal: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _everything: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = (
            (H_VERTICAL, self.vertical),
            (H_TYPE, self.type),
            (H_ERROR_STAGE, self.stage),
            (H_INGESTION_ID, self.ingestion_id),
        )
        equal = (*((k, v) for k, v in named if v is not None), *self.headers)
        object.__setattr__(self, "_equal", equal)
        object.__setattr__(self, "_everything", self.to_json() == _EVERYTHING)

    def matches(self, letter: DeadLetter) -> bool:
        if self._everything:
            return True
        h = letter.fields
        if self.partitions is not None and letter.partition not in self.partitions:
            return False
        if not self.in_offsets(letter.offset):
            return False
        for name, wanted in self._equal:
            if h.get(name) != wanted:
                return False
        if self.reason is not None and self.reason.lower() not in (letter.reason or "").lower():
            return False
        if self.verticals is not None and letter.vertical not in self.verticals:
            return False
        if self.since is not None and letter.time < self.since:
            return False
        return self.until is None or letter.time < self.until

    def in_offsets(self, offset: int) -> bool:
        if self.from_offset is not None and offset < self.from_offset:
            return False
        return self.to_offset is None or offset <= self.to_offset

    @property
    def time_only(self) -> bool:
        """Only ``until`` is set: "older than", which the topic itself can forget."""
        return self == DlqFilter(until=self.until) and self.until is not None

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        for name in ("since", "until"):
            data[name] = None if data[name] is None else format_time(data[name])
        data["headers"] = [list(pair) for pair in self.headers]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DlqFilter:
        values = dict(data)
        for name in ("since", "until"):
            values[name] = None if values.get(name) is None else parse_time(values[name])
        values["headers"] = tuple((str(k), str(v)) for k, v in values.get("headers") or ())
        for name in ("partitions", "verticals"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def fingerprint(self, *extra: Any) -> str:
        """A stable short hash of this filter (and ``extra``): the default replay id."""
        blob = orjson.dumps([self.to_json(), *extra], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]


_EVERYTHING: dict[str, Any] = {
    "vertical": None,
    "type": None,
    "stage": None,
    "reason": None,
    "headers": [],
    "ingestion_id": None,
    "since": None,
    "until": None,
    "partitions": None,
    "from_offset": None,
    "to_offset": None,
    "verticals": None,
}


def parse_header_matches(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``k=v`` strings as pairs; ValueError names a bad one.

    >>> parse_header_matches(["qanat.source=http"])
    (('qanat.source', 'http'),)
    """
    found = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--header wants name=value, not {pair!r}")
        found.append((name, value))
    return tuple(found)


def select(
    letters: Iterable[DeadLetter],
    wanted: DlqFilter,
    hidden: Callable[[DeadLetter], bool] | None = None,
) -> Generator[DeadLetter, None, None]:
    """The letters ``wanted`` matches that are not ``hidden`` (purged)."""
    for letter in letters:
        if wanted.matches(letter) and not (hidden is not None and hidden(letter)):
            yield letter


def stats(letters: Iterable[DeadLetter]) -> dict[str, Any]:
    """Counts by vertical, type, stage and reason; the oldest and newest time."""
    counters: dict[str, Counter[str]] = {
        name: Counter() for name in ("vertical", "type", "stage", "reason")
    }
    total, oldest, newest = 0, None, None
    for letter in letters:
        total += 1
        counters["vertical"][letter.vertical or "-"] += 1
        counters["type"][letter.type or "-"] += 1
        counters["stage"][letter.stage or "-"] += 1
        counters["reason"][letter.reason or "-"] += 1
        oldest = letter.time if oldest is None or letter.time < oldest else oldest
        newest = letter.time if newest is None or letter.time > newest else newest
    return {
        "total": total,
        **{f"by_{name}": dict(counter.most_common()) for name, counter in counters.items()},
        "oldest": None if oldest is None else format_time(oldest),
        "newest": None if newest is None else format_time(newest),
    }
