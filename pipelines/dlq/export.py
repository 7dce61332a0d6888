"""Dead letters to NDJSON and back, for records that need a hand fix.

One dead letter per line, a JSON object::

    {"position": {"topic": "qanat.dlq", "partition": 0, "offset": 7, "timestamp": 1767...},
     "key": "shop/product/p1", "key_encoding": "utf-8",
     "value": {"name": "Lamp"}, "value_encoding": "json",
     "headers": {"qanat.vertical": "shop", "qanat.error.reason": "...", ...}}

``value_encoding`` is ``json`` (the value parsed: edit it as JSON), ``base64`` (the bytes
were not JSON) or ``none`` (no value); ``key_encoding`` is ``utf-8``, ``base64`` or
``none``. Importing a line republishes it to the raw topic as a replay
(:func:`pipelines.core.deadletter.replay_headers`, the same loop guard); a ``json`` value is sent
re-serialized (compact JSON), a ``base64`` one as its exact bytes. An import is not
checkpointed: importing a file twice republishes it twice, which the version-guarded
upsert makes harmless for the store.

>>> item = parse_line('{"key": "k", "value": {"name": "x"}, "headers": {"a": "b"}}')
>>> item.key, item.value, item.headers
(b'k', b'{"name":"x"}', [('a', b'b')])
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import replay_count, replay_headers
from pipelines.core.errors import FatalError
from pipelines.core.topics import H_REPLAY_COUNT, Headers
from pipelines.dlq.letter import DeadLetter, text_or_base64, value_for_json
from pipelines.dlq.replay import ReplaySummary, Verdict


def export_line(letter: DeadLetter, topic: str) -> bytes:
    """One NDJSON line (with its newline) for ``letter``."""
    key, key_encoding = text_or_base64(letter.key)
    value, value_encoding = value_for_json(letter.value)
    position = {
        "topic": topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp,
    }
    line = {
        "position": position,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": letter.fields,
    }
    return orjson.dumps(line) + b"\n"


@dataclass(frozen=True)
class ImportItem:
    """One line of an import file: what to republish."""

    line: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def replay_count(self) -> int:
        return replay_count(dict(self.headers).get(H_REPLAY_COUNT))


def _bytes(data: dict[str, Any], name: str, default: str) -> bytes | None:
    encoding = data.get(f"{name}_encoding", default)
    raw = data.get(name)
    if encoding == "none" or (raw is None and encoding != "json"):
        return None
    if encoding == "json":
        return orjson.dumps(raw)
    if not isinstance(raw, str):
        raise ValueError(f"{name} must be a string with {name}_encoding {encoding!r}")
    if encoding == "utf-8":
        return raw.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{name} is not valid base64: {exc}") from None
    raise ValueError(f"{name}_encoding must be json, utf-8, base64 or none, not {encoding!r}")


def parse_line(text: str, line: int = 1) -> ImportItem:
    """One NDJSON line as an :class:`ImportItem`; ValueError says what is wrong."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("headers must be an object of strings")
    if "value" not in data:
        raise ValueError("no value")
    key = _bytes(data, "key", "utf-8")
    value = _bytes(data, "value", "json")
    return ImportItem(line, key, value, [(k, v.encode("utf-8")) for k, v in headers.items()])


def read_import(lines: Iterable[str]) -> tuple[list[ImportItem], list[str]]:
    """The items of an NDJSON file and its bad lines (``"line N: why"``); blank lines skip."""
    items, problems = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            items.append(parse_line(text, number))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    return items, problems


def import_items(
    kafka: KafkaSettings,
    items: list[ImportItem],
    max_replays: int = 3,
    verdict: Verdict | None = None,
    timeout: float = 30.0,
) -> ReplaySummary:
    """Republish ``items`` to the raw topic as replays (``verdict``: a dry run instead)."""
    summary = ReplaySummary("import", dry_run=verdict is not None)
    producer = (
        None if verdict else Producer(kafka.client(acks="all", **{"enable.idempotence": True}))
    )
    errors: list[tuple[int, KafkaError]] = []
    for item in items:
        summary.examined += 1
        if item.replay_count >= max_replays:
            summary.skipped_loop_guard += 1
            continue
        headers, _count = replay_headers(item.headers)
        if verdict is not None:
            reason = verdict(item.key, item.value, headers)
            summary.would_pass += reason is None
            summary.would_fail += reason is not None
            if reason is not None:
                summary.fail_reasons[reason] += 1
            continue
        assert producer is not None
        _produce(producer, kafka.topics.raw, item, headers, errors, summary)
    if producer is not None and producer.flush(timeout) > 0:
        raise FatalError("the raw topic did not acknowledge every message in time")
    for line, error in errors:
        summary.replayed -= 1
        summary.fail(f"line {line}: {error.str()}")
    return summary


def _produce(
    producer: Producer,
    topic: str,
    item: ImportItem,
    headers: Headers,
    errors: list[tuple[int, KafkaError]],
    summary: ReplaySummary,
) -> None:
    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            errors.append((item.line, error))

    while True:
        try:
            producer.produce(topic, item.value, item.key, headers=headers, on_delivery=delivered)
            summary.replayed += 1
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            summary.fail(f"line {item.line}: {exc.args[0].str()}")
            return
