"""NDJSON streaming ingest: read the body incrementally, produce each line as it comes.

Only the current partial line is held (at most ``max_line_bytes``); while the producer's
local queue is full the body is not read, so the client is slowed down through TCP. A
line that is not a JSON object, or that nests deeper than
:data:`~pipelines.core.records.MAX_NESTING_DEPTH` (``too_deep``) or has a key twice in an object
(``duplicate_key``, :mod:`sources.http.jsoncheck`), is rejected with its number and the JSON
path (``$.a.0``), and the stream goes on.

>>> splitter = LineSplitter(max_line_bytes=8)
>>> list(splitter.feed(b'{"a":1}\\n{"b"')) + list(splitter.feed(b':2}\\n')) + list(splitter.end())
[(1, b'{"a":1}'), (2, b'{"b":2}')]
>>> list(LineSplitter(4).feed(b"toolong\\nok\\n"))
[(1, None), (2, b'ok')]
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from pipelines.core.errors import RetriableError
from pipelines.core.records import MAX_NESTING_DEPTH, RawMeta, new_id, now, raw_event
from sources.base import ingestion_summary
from sources.http.errors import ApiError, kafka_unavailable
from sources.http.jsoncheck import duplicate_key_path, json_path, too_deep_path
from sources.http.values import diagnose
from sources.publisher import Acks, KafkaPublisher

logger = logging.getLogger(__name__)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")


class LineSplitter:
    """Split chunks into lines, across chunk boundaries, holding at most one partial line.

    Yields ``(line_number, bytes)`` per complete line (without its ``\\n``), or
    ``(line_number, None)`` once for a line longer than ``max_line_bytes``, whose rest is
    then skipped up to the next newline without being buffered. Line numbers start at 1.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.number = 1
        self._partial = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes | None]]:
        start, size = 0, len(chunk)
        while start < size:
            end = chunk.find(b"\n", start)
            if end == -1:
                yield from self._keep(chunk, start, size)
                return
            if self._skipping:
                self._skipping = False
            elif len(self._partial) + end - start > self.max_line_bytes:
                self._partial.clear()
                yield self.number, None
            elif self._partial:
                self._partial += chunk[start:end]
                line = bytes(self._partial)
                self._partial.clear()
                yield self.number, line
            else:
                yield self.number, chunk[start:end]
            self.number += 1
            start = end + 1

    def _keep(self, chunk: bytes, start: int, end: int) -> Iterator[tuple[int, bytes | None]]:
        """Hold the unterminated tail of a chunk, unless it makes the line too long."""
        if self._skipping:
            return
        if len(self._partial) + end - start > self.max_line_bytes:
            self._partial.clear()
            self._skipping = True
            yield self.number, None
        else:
            self._partial += chunk[start:end]

    def end(self) -> Iterator[tuple[int, bytes | None]]:
        """The last line, if the body did not end with a newline."""
        if self._partial and not self._skipping:
            line = bytes(self._partial)
            self._partial.clear()
            yield self.number, line


@dataclass
class StreamReport:
    """What the client learns about its stream: counts, and the first rejected lines."""

    ingestion_id: str
    max_errors: int
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, code: str, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < self.max_errors:
            self.errors.append({"line": line, "code": code, "message": message})

    def body(self) -> dict[str, Any]:
        return {
            "ingestion_id": self.ingestion_id,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_omitted": self.rejected - len(self.errors),
        }


@dataclass(frozen=True)
class StreamTarget:
    """Where and as what the lines of one stream are published."""

    publisher: KafkaPublisher
    topic: str
    vertical: str
    type: str
    source: str
    summary_topic: str | None = None
    """Where the ingestion's summary goes once every line is produced (None: nowhere)."""


async def ingest_ndjson(
    chunks: AsyncIterable[bytes],
    target: StreamTarget,
    max_line_bytes: int,
    max_errors: int,
) -> dict[str, Any]:
    """Publish every JSON-object line of ``chunks`` under one ingestion id; return the
    report once Kafka acknowledged every accepted line. Raise a 503 :class:`ApiError`
    (with the counts so far) if Kafka fails."""
    report = StreamReport(new_id(), max_errors)
    acks = target.publisher.acks()
    splitter = LineSplitter(max_line_bytes)
    try:
        async for chunk in chunks:
            received_at = now()
            for number, line in splitter.feed(chunk):
                await _line(number, line, received_at, target, acks, report, max_line_bytes)
            if acks.error is not None:
                raise RetriableError(f"Kafka did not acknowledge an event: {acks.error.str()}")
        for number, line in splitter.end():
            await _line(number, line, now(), target, acks, report, max_line_bytes)
        if target.summary_topic is not None:
            summary = ingestion_summary(
                report.ingestion_id, target.vertical, target.type, target.source, report.accepted
            )
            await target.publisher.produce(target.summary_topic, summary, acks)
        await target.publisher.wait(acks)
    except RetriableError as exc:
        logger.warning("stream %s failed: %s", report.ingestion_id, exc)
        acks.seal()
        await acks.future
        raise kafka_unavailable(exc, _failure_counts(report, acks, splitter)) from None
    except ClientDisconnect:
        acks.seal()
        await acks.future
        logger.info("stream %s: the client disconnected", report.ingestion_id)
        raise ApiError(400, "client_disconnected", "the client disconnected", "body") from None
    return report.body()


def _failure_counts(report: StreamReport, acks: Acks, splitter: LineSplitter) -> dict[str, Any]:
    return {
        "ingestion_id": report.ingestion_id,
        "lines_read": splitter.number - 1,
        "produced": report.accepted,
        "acknowledged": acks.acknowledged,
        "rejected": report.rejected,
        "errors": report.errors,
    }


async def _line(
    number: int,
    line: bytes | None,
    received_at: str,
    target: StreamTarget,
    acks: Acks,
    report: StreamReport,
    max_line_bytes: int,
) -> None:
    if line is None:
        report.reject(number, "line_too_long", f"the line is over {max_line_bytes} bytes")
        return
    line = line.strip()
    if not line:
        return
    deep = too_deep_path(line, MAX_NESTING_DEPTH)
    if deep is not None:
        where = json_path(deep)
        report.reject(
            number, "too_deep", f"{where} is nested deeper than {MAX_NESTING_DEPTH} levels"
        )
        return
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        problem = diagnose(line)  # invalid UTF-8 or a number beyond a float: say where
        if problem is None:
            report.reject(number, "invalid_json", f"the line is not valid JSON: {exc}")
        else:
            where = f"field {problem.path}" if problem.path else "the line"
            report.reject(number, problem.code, problem.message(where, whole="line"))
        return
    if not isinstance(obj, dict):
        report.reject(number, "not_an_object", f"expected an object, got {type(obj).__name__}")
        return
    twice = duplicate_key_path(line, obj)
    if twice is not None:
        where = json_path(twice)
        report.reject(number, "duplicate_key", f"the key {twice[-1]!r} appears twice, at {where}")
        return
    meta = RawMeta(
        target.vertical, target.type, target.source, report.ingestion_id, new_id(), received_at
    )
    await target.publisher.produce(target.topic, raw_event(line, obj, meta), acks)
    report.accepted += 1
