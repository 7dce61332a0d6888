"""Reading dead letters: the ``<prefix>.dlq`` topic is the source of truth.

Every dead letter is in the DLQ topic with its exact key, value and headers (design.md);
the errors table (``record_errors``) is a copy the errors sink keeps for the ingestion
routes, and may lag, be another store, or not exist. So ``qanat dlq`` reads the topic:
:class:`DlqScanner` reads it partition by partition, from a start position up to the end
offsets as of the start of the scan (read_committed), and :class:`DlqFilter` picks the
dead letters a command is about. A full scan is linear in the size of the DLQ topic, which
its retention bounds; a partition/offset range or a cursor narrows what is read.

>>> letter = DeadLetter(0, 7, 0, b"k", b"{}", [("qanat.vertical", b"shop"),
...     ("qanat.error.stage", b"validate"), ("qanat.error.reason", b"schema failed")])
>>> DlqFilter(vertical="shop", reason="SCHEMA").matches(letter)
True
>>> DlqFilter(stage="parse").matches(letter)
False
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import replay_count
from pipelines.core.errors import FatalError
from pipelines.core.records import format_time, parse_time
from pipelines.core.topics import (
    H_ERROR_AT,
    H_ERROR_DETAILS,
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_INGESTION_ID,
    H_REPLAY_COUNT,
    H_TYPE,
    H_VERTICAL,
    Headers,
    decode_headers,
)

Positions = dict[int, int]
"""Per partition, the next offset to read."""
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


class DeadLetter:
    """One message of the DLQ topic, as read (``timestamp``: Kafka's, in ms)."""

    __slots__ = ("_fields", "_time", "headers", "key", "offset", "partition", "timestamp", "value")

    def __init__(
        self,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        self.partition, self.offset, self.timestamp = partition, offset, timestamp
        self.key, self.value, self.headers = key, value, headers
        self._fields: dict[str, str] | None = None
        self._time: datetime | None = None

    @property
    def fields(self) -> dict[str, str]:
        """The headers as text, decoded on first use (a replay without filters never needs
        them: the hot path)."""
        if self._fields is None:
            self._fields = decode_headers(self.headers)
        return self._fields

    @property
    def vertical(self) -> str | None:
        return self.fields.get(H_VERTICAL)

    @property
    def type(self) -> str | None:
        return self.fields.get(H_TYPE)

    @property
    def stage(self) -> str | None:
        return self.fields.get(H_ERROR_STAGE)

    @property
    def reason(self) -> str | None:
        return self.fields.get(H_ERROR_REASON)

    @property
    def replay_count(self) -> int:
        for name, value in reversed(self.headers):  # the last one counts; it comes last
            if name == H_REPLAY_COUNT:
                return replay_count(value)
        return 0

    @property
    def time(self) -> datetime:
        """When it failed (``qanat.error.at``), else when Kafka stored it."""
        if self._time is None:
            self._time = self._failed_at()
        return self._time

    def _failed_at(self) -> datetime:
        at = self.fields.get(H_ERROR_AT)
        if at:
            try:
                return parse_time(at)
            except (ValueError, OverflowError):
                pass
        return datetime.fromtimestamp(max(self.timestamp, 0) / 1000, UTC)

    def details(self) -> Any:
        text = self.fields.get(H_ERROR_DETAILS)
        if text is None:
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text

    def brief(self) -> dict[str, Any]:
        """The columns of ``qanat dlq ls`` and of ``GET /api/v1/dlq`` items."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": format_time(self.time),
            "vertical": self.vertical,
            "type": self.type,
            "stage": self.stage,
            "reason": self.reason,
            "ingestion_id": self.fields.get(H_INGESTION_ID),
            "replay_count": self.replay_count,
            "key": text_or_base64(self.key)[0],
        }

    def full(self) -> dict[str, Any]:
        """Everything: the brief columns, every header, the key and value, the details."""
        key, key_encoding = text_or_base64(self.key)
        value, value_encoding = value_for_json(self.value)
        return {
            **self.brief(),
            "key": key,
            "key_encoding": key_encoding,
            "value": value,
            "value_encoding": value_encoding,
            "headers": self.fields,
            "details": self.details(),
        }


def text_or_base64(raw: bytes | None) -> tuple[str | None, str]:
    """Bytes for JSON: ``(text, "utf-8")``, ``(base64, "base64")`` or ``(None, "none")``."""
    import base64

    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def value_for_json(raw: bytes | None) -> tuple[Any, str]:
    """A value for JSON: parsed (``"json"``), else base64 (``"base64"``), or ``"none"``.

    >>> value_for_json(b'{"a": 1}'), value_for_json(b"\\xff"), value_for_json(None)
    (({'a': 1}, 'json'), ('/w==', 'base64'), (None, 'none'))
    """
    import base64

    if raw is None:
        return None, "none"
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


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


class DlqScanner:
    """Reads the DLQ topic, one partition after another, up to the end offsets it finds
    when a scan starts; never commits. Close it when done (or use it as a context)."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 15.0, batch: int = 1000) -> None:
        self.topic = kafka.topics.dlq
        self.timeout = timeout
        self.batch = batch
        self.consumer = Consumer(
            kafka.client(
                **{
                    "group.id": f"{kafka.topic_prefix}.dlq-reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,  # the end of a partition is known sooner
                    "auto.offset.reset": "earliest",
                }
            )
        )

    def __enter__(self) -> DlqScanner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.consumer.close()

    def partitions(self) -> list[int]:
        metadata = self.consumer.list_topics(self.topic, timeout=self.timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise FatalError(f"cannot read topic {self.topic}: {topic and topic.error}")
        return sorted(topic.partitions)

    def ranges(self, wanted: DlqFilter, start: Positions | None = None) -> dict[int, range]:
        """Per selected partition, the offsets a scan reads: from the start position (or
        the filter's first offset, or the log start) to the end as of now."""
        ranges = {}
        for partition in self.partitions():
            if wanted.partitions is not None and partition not in wanted.partitions:
                continue
            tp = TopicPartition(self.topic, partition)
            low, high = self.consumer.get_watermark_offsets(tp, self.timeout, cached=False)
            first = max(low, (start or {}).get(partition, 0), wanted.from_offset or 0)
            last = high if wanted.to_offset is None else min(high, wanted.to_offset + 1)
            if first < last:
                ranges[partition] = range(first, last)
        return ranges

    def scan(self, ranges: dict[int, range], ordered: bool = True) -> Iterator[DeadLetter]:
        """Every dead letter in ``ranges``: in (partition, offset) order, or (faster, every
        partition at once) in offset order within each partition only."""
        if not ordered:
            yield from self._read(ranges)
            return
        for partition, offsets in sorted(ranges.items()):
            yield from self._read({partition: offsets})

    def _read(self, ranges: dict[int, range]) -> Iterator[DeadLetter]:
        pending = {p: r.stop for p, r in ranges.items() if len(r)}
        self.consumer.assign([TopicPartition(self.topic, p, ranges[p].start) for p in pending])
        idle_since = time.monotonic()
        try:
            while pending:
                messages = self.consumer.consume(self.batch, 0.1)
                if messages:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.timeout:
                    raise FatalError(f"{self.topic} {sorted(pending)} did not answer in time")
                for message in messages:
                    partition = message.partition() or 0
                    stop = pending.get(partition)
                    if stop is None:
                        continue  # finished, or not ours
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise FatalError(f"reading {self.topic}[{partition}]: {error}")
                        del pending[partition]
                        continue
                    offset = message.offset() or 0
                    if offset >= stop - 1:
                        del pending[partition]
                        if offset >= stop:
                            continue
                    yield DeadLetter(
                        partition,
                        offset,
                        message.timestamp()[1],
                        message.key(),
                        message.value(),
                        message.headers() or [],
                    )
        finally:
            with suppress(RuntimeError):  # closed already: a caller that stopped early
                self.consumer.unassign()


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
