"""Replaying dead letters to the raw topic: a loop guard, a dry run, resumable.

:class:`Replayer` scans the DLQ topic (:mod:`pipelines.dlq.read`) and republishes every
dead letter its filter matches to ``<prefix>.raw`` with the original key, value and
headers, minus the ``qanat.error.*`` headers, ``qanat.replay.count`` plus one and the
error in ``qanat.replay.last_error`` (:func:`pipelines.core.deadletter.replay_headers`).

* Loop guard: a dead letter already replayed ``max_replays`` times is skipped and counted.
* Resumable, exactly once: the republished messages and the replay's checkpoint
  (:class:`pipelines.dlq.state.ReplayCheckpoint`) are written in one Kafka transaction
  (``transactional.id`` = ``<prefix>.dlq-replay.<replay id>``), committed every
  ``commit_seconds``. After a ``kill -9`` the open transaction is aborted (when the same
  replay starts again, which fences it, or after ``transaction.timeout.ms``) and the run
  resumes from the last committed checkpoint: read_committed consumers of the raw topic
  (the transform) never see a message twice. The replay id defaults to a hash of the
  filter and the loop guard, so running the same command again resumes it.
* A dead letter another replay already republished (its checkpoint covers it) is skipped.
* A dead letter whose value was truncated to fit the DLQ (``qanat.error.truncated``) is
  skipped and counted: its bytes are no longer the event's.
* Dry run: each dead letter, with the headers it would be republished with, goes through
  the transform's own :meth:`pipelines.transform.transformer.Transformer.process` with the schemas
  registered now; nothing is written.

>>> Pacer(None).wait()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.deadletter import replay_headers
from pipelines.core.errors import FatalError
from pipelines.core.records import now
from pipelines.core.topics import (
    H_ERROR_REASON,
    H_ERROR_STAGE,
    H_ERROR_TRUNCATED,
    Headers,
    decode_headers,
)
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.letter import DeadLetter
from pipelines.dlq.read import DlqScanner
from pipelines.dlq.state import DlqState, ReplayCheckpoint
from pipelines.transform.schemas import SchemaStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (dead letters examined, dead letters to examine)."""
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how; ``rate`` in messages per second (None: unlimited)."""

    filter: DlqFilter = field(default_factory=DlqFilter)
    max_replays: int = 3
    rate: float | None = None
    dry_run: bool = False
    replay_id: str | None = None

    @property
    def id(self) -> str:
        return self.replay_id or self.filter.fingerprint(self.max_replays)


@dataclass
class ReplaySummary:
    """What a replay run did (this run's counts; ``resumed``: it continued a checkpoint)."""

    replay_id: str
    dry_run: bool
    resumed: bool = False
    examined: int = 0
    filtered_out: int = 0
    purged: int = 0
    already_replayed: int = 0
    skipped_loop_guard: int = 0
    skipped_truncated: int = 0
    replayed: int = 0
    failed: int = 0
    would_pass: int = 0
    would_fail: int = 0
    fail_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {
            name: getattr(self, name)
            for name in (
                "replay_id",
                "dry_run",
                "resumed",
                "examined",
                "filtered_out",
                "purged",
                "already_replayed",
                "skipped_loop_guard",
                "skipped_truncated",
            )
        }
        if self.dry_run:
            data |= {
                "would_pass": self.would_pass,
                "would_fail": self.would_fail,
                "fail_reasons": dict(self.fail_reasons.most_common()),
            }
        else:
            data |= {"replayed": self.replayed, "failed": self.failed, "failures": self.failures}
        return data

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(message)


class Pacer:
    """Spaces calls to :meth:`wait` at most ``rate`` per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    def delay(self) -> float:
        """Seconds the next :meth:`wait` would sleep."""
        return max(0.0, self.next - time.monotonic()) if self.interval else 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        current = time.monotonic()
        if self.next > current:
            time.sleep(self.next - current)
        self.next = max(self.next, current) + self.interval


def current_schemas(kafka: KafkaSettings, timeout: float = 15.0) -> SchemaStore:
    """A SchemaStore with the latest registered version of every schema, read now."""
    from pipelines.transform.registry import SchemaRegistry

    registry = SchemaRegistry(kafka, timeout)
    try:
        store = SchemaStore()
        for found in registry.list():
            store.put(found.vertical, found.type, found.schema, found.version)
        return store
    finally:
        registry.close()


class Verdict:
    """The transform's decision on a replayed dead letter: None (it would pass) or why not.

    ``transformer`` is a :class:`pipelines.transform.transformer.Transformer` built like the running
    transform's (same schemas, limits and schemaless policy)."""

    def __init__(self, transformer: Any, raw_topic: str) -> None:
        self.transformer = transformer
        self.raw_topic = raw_topic

    def __call__(self, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        routed = self.transformer.process(value, key, headers, self.raw_topic, 0, 0)
        if not routed.dead:
            return None
        h = decode_headers(routed.headers)
        return f"{h.get(H_ERROR_STAGE, '?')}: {h.get(H_ERROR_REASON, '?')}"


def transform_verdict(kafka: KafkaSettings, settings: Any = None) -> Verdict:
    """A :class:`Verdict` with the schemas registered now and the transform's settings
    (``settings``: a TransformSettings; default: loaded from the environment)."""
    from pipelines.core.config import load
    from pipelines.transform.stage import TransformSettings
    from pipelines.transform.transformer import Transformer

    settings = settings or load(TransformSettings)
    transformer = Transformer(
        current_schemas(kafka),
        settings.max_message_bytes,
        settings.max_name_length,
        settings.schemaless,
    )
    return Verdict(transformer, kafka.topics.raw)


class Replayer:
    """One replay (or dry run) of the dead letters ``options.filter`` matches.

    >>> # Replayer(kafka, ReplayOptions(DlqFilter(vertical="shop"), rate=100)).run()
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        options: ReplayOptions,
        *,
        verdict: Verdict | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        commit_seconds: float = 1.0,
        commit_messages: int = 20_000,
        timeout: float = 30.0,
    ) -> None:
        if options.dry_run and verdict is None:
            raise ValueError("a dry run needs a verdict (transform_verdict)")
        self.kafka = kafka
        self.options = options
        self.verdict = verdict
        self.progress = progress or (lambda _done, _total: None)
        self.stop = stop or threading.Event()
        self.commit_seconds = commit_seconds
        self.commit_messages = commit_messages
        self.timeout = timeout
        self.summary = ReplaySummary(options.id, options.dry_run)

    def run(self) -> ReplaySummary:
        with ThreadPoolExecutor(1, "qanat-replay-init") as pool:
            # The transactional producer's start (a round trip or more, and it aborts a
            # killed run's transaction) overlaps with reading the state and the DLQ's ends.
            producer = None if self.options.dry_run else pool.submit(self._producer)
            state = DlqState.load(self.kafka, self.timeout)
            checkpoint = self._checkpoint(state)
            with DlqScanner(self.kafka, self.timeout) as scanner:
                ranges = scanner.ranges(self.options.filter, checkpoint.positions)
                total = sum(len(r) for r in ranges.values())
                self.progress(0, total)
                if producer is None:
                    self._dry_run(scanner, ranges, state, total)
                else:
                    transaction = _Transaction(self, checkpoint, state, producer.result())
                    transaction.run(scanner, ranges, total)
        return self.summary

    def _producer(self) -> Producer:
        kafka = self.kafka
        producer = Producer(
            kafka.client(
                **{
                    "transactional.id": f"{kafka.topic_prefix}.dlq-replay.{self.options.id}",
                    "transaction.timeout.ms": 10_000,
                    "linger.ms": 5,
                }
            )
        )
        producer.init_transactions(self.timeout)
        return producer

    def _checkpoint(self, state: DlqState) -> ReplayCheckpoint:
        options = self.options
        found = state.replays.get(options.id)
        if found is None:
            return ReplayCheckpoint(options.id, options.filter, options.max_replays)
        if found.filter != options.filter or found.max_replays != options.max_replays:
            raise FatalError(
                f"replay id {options.id!r} was used with another filter or --max-replays; "
                "choose another --replay-id"
            )
        self.summary.resumed = bool(found.positions)
        return found

    def classify(self, letter: DeadLetter, state: DlqState) -> bool:
        """Count ``letter`` unless it is to be replayed (True)."""
        summary = self.summary
        summary.examined += 1
        if not self.options.filter.matches(letter):
            summary.filtered_out += 1
        elif state.purges and state.is_purged(letter):
            summary.purged += 1
        elif letter.replay_count >= self.options.max_replays:
            summary.skipped_loop_guard += 1
        elif letter.headers and letter.headers[-1][0] == H_ERROR_TRUNCATED:  # set last
            summary.skipped_truncated += 1
        elif state.replays and state.replayed_by_other(letter, self.options.id):
            summary.already_replayed += 1
        else:
            return True
        return False

    def _dry_run(
        self, scanner: DlqScanner, ranges: dict[int, range], state: DlqState, total: int
    ) -> None:
        assert self.verdict is not None
        for letter in scanner.scan(ranges, ordered=False):
            if self.stop.is_set():
                break
            if self.classify(letter, state):
                headers, _count = replay_headers(letter.headers)
                reason = self.verdict(letter.key, letter.value, headers)
                if reason is None:
                    self.summary.would_pass += 1
                else:
                    self.summary.would_fail += 1
                    self.summary.fail_reasons[reason] += 1
            if self.summary.examined % 500 == 0:
                self.progress(self.summary.examined, total)
        self.progress(self.summary.examined, total)


class _Transaction:
    """The producing half of a replay: republished messages and checkpoint, one
    transaction at a time."""

    def __init__(
        self,
        replayer: Replayer,
        checkpoint: ReplayCheckpoint,
        state: DlqState,
        producer: Producer,
    ) -> None:
        self.replayer = replayer
        self.checkpoint = checkpoint
        self.state = state
        self.raw = replayer.kafka.topics.raw
        self.state_topic = replayer.kafka.topics.dlq_state  # DlqState.load created it
        self.producer = producer  # transactions initialized
        self.pacer = Pacer(replayer.options.rate)
        self.base_counts = dict(checkpoint.counts)  # totals of earlier runs of this replay

    def run(self, scanner: DlqScanner, ranges: dict[int, range], total: int) -> None:
        # The loop runs once per dead letter: what it uses is bound to locals.
        replayer = self.replayer
        summary, positions = replayer.summary, self.checkpoint.positions
        classify, produce, pace = replayer.classify, self._produce, self.pacer.interval > 0
        every, most, stop = replayer.commit_seconds, replayer.commit_messages, replayer.stop
        try:
            self.producer.begin_transaction()
            due, pending = time.monotonic() + every, 0
            for letter in scanner.scan(ranges, ordered=False):
                if stop.is_set():
                    break
                if classify(letter, self.state):
                    if pace and pending and time.monotonic() + self.pacer.delay() >= due:
                        # commit before a long pause: no transaction stays open for it
                        self._commit(begin_next=True)
                        due, pending = time.monotonic() + every, 0
                    if pace:
                        self.pacer.wait()
                    pending += produce(letter)
                positions[letter.partition] = letter.offset + 1
                if pending >= most or time.monotonic() >= due:
                    self._commit(begin_next=True)
                    replayer.progress(summary.examined, total)
                    due, pending = time.monotonic() + every, 0
            self._commit(begin_next=False)
            replayer.progress(summary.examined, total)
        except KafkaException as exc:
            self._abort()
            raise FatalError(
                f"replay {self.checkpoint.id} stopped: {exc}; run it again to resume"
            ) from exc

    def _produce(self, letter: DeadLetter) -> int:
        headers = replay_headers(letter.headers)[0]
        while True:
            try:
                # No delivery callback: a message Kafka refuses fails commit_transaction.
                self.producer.produce(self.raw, letter.value, letter.key, headers=headers)
                self.replayer.summary.replayed += 1
                return 1
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused locally (too large, ...): never sent
                where = f"{letter.partition}@{letter.offset}"
                self.replayer.summary.fail(f"{where}: {exc.args[0].str()}")
                return 0

    def _commit(self, *, begin_next: bool) -> None:
        summary = self.replayer.summary
        self.checkpoint.updated_at = now()
        self.checkpoint.counts = {
            name: self.base_counts.get(name, 0) + getattr(summary, name)
            for name in ("replayed", "skipped_loop_guard", "failed")
        }
        self.producer.produce(
            self.state_topic, orjson.dumps(self.checkpoint.to_json()), self.checkpoint.key
        )
        self.producer.commit_transaction(self.replayer.timeout)
        if begin_next:
            self.producer.begin_transaction()

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(self.replayer.timeout)
        except KafkaException as exc:
            logger.warning("aborting replay transaction: %s", exc)
