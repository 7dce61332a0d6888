"""What every source shares: turning client objects into raw events and publishing them.

A source acknowledges its client only after Kafka acknowledged every event
(design.md, "Delivery guarantees"); :class:`sources.publisher.KafkaPublisher` is how a
push source knows.

The SDK for sources that fetch (docs/custom-sources.md): :class:`PullSource` (write
``poll``; schedule, retries, contract, checkpointed cursor are done for you) and, for
sources that are not polled, :class:`ContractSource`; both are Quix Streams
``StatefulSource`` subclasses, run by :func:`sources.runner.run_sources`.

>>> meta_events = build_raw_events([b'{"name": "a"}'], "shop", "product", "http")
>>> meta_events[1][0].headers[0]
('qanat.vertical', b'shop')
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from confluent_kafka import KafkaException
from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
from quixstreams.kafka.exceptions import KafkaProducerDeliveryError
from quixstreams.sources import Source, StatefulSource

from pipelines.core import metrics
from pipelines.core.errors import RetriableError
from pipelines.core.records import RawEvent, RawMeta, new_id, now, raw_event
from pipelines.core.topics import TopicNames

# Re-exported: a connector needs only this module (and sources.retry for HTTP).
from sources.pull_settings import PullSourceSettings as PullSourceSettings
from sources.pull_settings import SourceSettings as SourceSettings
from sources.pull_settings import get_path as get_path
from sources.retry import BadDataError, SourceStoppedError, call_with_retry

logger = logging.getLogger(__name__)
T = TypeVar("T")


def build_raw_events(
    values: Sequence[bytes],
    vertical: str,
    type_: str,
    source: str,
    objects: Sequence[Any] | None = None,
    ingestion_id: str | None = None,
) -> tuple[str, list[RawEvent]]:
    """One ingestion id for the whole request (a new one unless given), one event id and
    raw event per value."""
    ingestion_id = ingestion_id or new_id()
    received_at = now()
    events = []
    for index, value in enumerate(values):
        obj = objects[index] if objects is not None else _loads_or_none(value)
        meta = RawMeta(vertical, type_, source, ingestion_id, new_id(), received_at)
        events.append(raw_event(value, obj, meta))
    metrics.count("source", "received", vertical, type_, len(events))
    return ingestion_id, events


def ingestion_summary(
    ingestion_id: str, vertical: str, type_: str, source: str, accepted: int
) -> RawEvent:
    """The message for the ingestions topic saying how many events an ingestion put in
    Kafka; produced after them, with the same acknowledgement counter.

    >>> orjson.loads(ingestion_summary("i1", "shop", "product", "http", 3).value)["accepted"]
    3
    """
    summary = {
        "ingestion_id": ingestion_id,
        "vertical": vertical,
        "type": type_,
        "source": source,
        "accepted": accepted,
        "received_at": now(),
    }
    return RawEvent(ingestion_id, orjson.dumps(summary), [])


def _loads_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


# --- pull sources: the SDK for sources that fetch from somewhere on a schedule ----------

#: The state key of a pull source's checkpoint: ``{"cursor": ..., "ingestion": ...}``.
CHECKPOINT_KEY = "checkpoint"


@dataclass(frozen=True)
class Page:
    """What one step of :meth:`PullSource.poll` fetched: the records (JSON objects, or
    raw bytes sent untouched) and the cursor to resume from after them (JSON-able)."""

    records: Sequence[Any]
    cursor: Any


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot serialize {type(value).__name__}")


S = TypeVar("S", bound=SourceSettings)
P = TypeVar("P", bound=PullSourceSettings)


class ContractSource(StatefulSource, Generic[S]):
    """A Quix Streams source that produces records in qanat's record contract and keeps a
    checkpoint that is saved only after Kafka acknowledged what came before it.

    Subclass it for a source that is not polled (a subscription, a file); write ``run``
    (Quix's) with :meth:`produce_records`, :meth:`produce_summary`,
    :meth:`load_checkpoint` and :meth:`save_checkpoint`. Polled sources subclass
    :class:`PullSource` instead.
    """

    #: The connector's name: the ``qanat.source`` header (and the YAML ``kind``).
    kind: ClassVar[str] = "custom"
    #: Seconds Kafka has to acknowledge the events before a checkpoint fails.
    delivery_timeout_s: ClassVar[float] = 30.0

    def __init__(self, settings: S, topics: TopicNames, once: bool = False) -> None:
        super().__init__(name=settings.name, shutdown_timeout=self.delivery_timeout_s)
        self.settings = settings
        self.topics = topics
        #: Do one unit of work and return (``qanat collect --once``): for cron jobs, tests.
        self.once = once
        self.log_level = "INFO"
        self._stop_event: threading.Event | None = None  # made in the source's process

    def open(self) -> None:
        """Open clients and connections (runs in the source's own process)."""

    def close(self) -> None:
        """Close what :meth:`open` opened."""

    @property
    def stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (early) when the source was asked to stop."""
        if self._stop_event is None:
            time.sleep(max(0.0, seconds))
            return False
        return self._stop_event.wait(max(0.0, seconds))

    def retrying(self, attempt: Callable[[], T], what: str = "") -> T:
        """``attempt()`` with this source's retry policy (see :mod:`sources.retry`)."""
        return call_with_retry(attempt, self.settings.retry, self.wait, what or self.name)

    def encode(self, record: Any) -> tuple[bytes, Any]:
        """A record as the raw event's value and its parsed object (for the key)."""
        if isinstance(record, bytes | bytearray):
            return bytes(record), _loads_or_none(bytes(record))
        obj = self.settings.map_record(record)
        return orjson.dumps(obj, default=_json_default), obj

    def produce_records(
        self,
        records: Sequence[Any],
        ingestion_id: str,
        vertical: str | None = None,
        type_: str | None = None,
    ) -> int:
        """Produce records (objects, or bytes sent untouched) to the raw topic under one
        ingestion id; the settings' vertical and type unless given. Not yet acknowledged:
        :meth:`save_checkpoint` waits for that."""
        encoded = [self.encode(record) for record in records]
        _, events = build_raw_events(
            [value for value, _ in encoded],
            vertical or self.settings.vertical,
            type_ or self.settings.type,
            self.kind,
            [obj for _, obj in encoded],
            ingestion_id=ingestion_id,
        )
        for event in events:
            self._produce(self.topics.raw, event)
        return len(events)

    def produce_summary(self, ingestion_id: str, accepted: int) -> None:
        """The ingestion's summary for the ingestions topic (after its events)."""
        summary = ingestion_summary(
            ingestion_id, self.settings.vertical, self.settings.type, self.kind, accepted
        )
        self._produce(self.topics.ingestions, summary)

    def load_checkpoint(self) -> dict[str, Any]:
        """The last saved checkpoint ({} before the first)."""
        saved = self.state.get(CHECKPOINT_KEY)
        return dict(saved) if isinstance(saved, dict) else {}

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Wait until Kafka acknowledged every event produced so far, then save
        ``checkpoint`` (JSON-able) and flush it to its changelog topic. Quix's own
        ``StatefulSource.flush`` commits the state *before* flushing the producer, so a
        crash between the two could lose events; hence this order. Raises RetriableError
        (nothing saved) when Kafka did not acknowledge."""
        try:
            Source.flush(self, self.delivery_timeout_s)  # the events, acknowledged
            self.state.set(CHECKPOINT_KEY, checkpoint)
            StatefulSource.flush(self, self.delivery_timeout_s)  # the state, to its changelog
        except (CheckpointProducerTimeout, KafkaProducerDeliveryError, KafkaException) as exc:
            # Forget the uncommitted state transaction: work resumes from the last saved
            # checkpoint (at-least-once; the store's upsert makes repeats harmless).
            self._store_transaction = None
            self._store_state = None
            raise RetriableError(f"Kafka did not acknowledge: {exc}", 5.0) from exc

    def _produce(self, topic: str, event: RawEvent) -> None:
        try:
            self.producer.produce(
                topic=topic, value=event.value, key=event.key, headers=event.headers
            )
        except (BufferError, KafkaException, KafkaProducerDeliveryError) as exc:
            raise RetriableError(f"could not produce to {topic}: {exc}", 5.0) from exc

    # --- Quix Streams' lifecycle, in the source's process ---------------------------------

    def setup(self) -> None:
        if not logging.getLogger().handlers:  # a spawned process: log like the parent
            logging.basicConfig(
                level=self.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
        self.open()

    def start(self) -> None:
        self._stop_event = threading.Event()
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._stop_event is not None:
            self._stop_event.set()

    def cleanup(self, failed: bool) -> None:
        try:
            super().cleanup(failed)
        finally:
            self.close()


class PullSource(ContractSource[P]):
    """A source that polls a remote system on a schedule: subclass it and write
    :meth:`poll`; this class produces the records in the record contract (key,
    headers, one ingestion id per poll), saves the cursor after Kafka acknowledged
    them, retries, schedules, and stops promptly.

    >>> class Numbers(PullSource[PullSourceSettings]):
    ...     kind = "numbers"
    ...     settings_model = PullSourceSettings
    ...     def poll(self, cursor):
    ...         start = cursor or 0
    ...         numbers = range(start, start + 3)
    ...         yield Page([{"source_id": str(n), "name": f"n{n}"} for n in numbers], start + 3)
    >>> settings = PullSourceSettings(kind="numbers", name="n", vertical="demo", type="number")
    >>> source = Numbers(settings, TopicNames("qanat"))
    >>> [page.cursor for page in source.poll(None)]
    [3]

    Run it with :func:`sources.runner.run_sources` (a Quix Streams Application with
    every source feeding the raw topic), or ``qanat collect`` with ``kind: module:Numbers``.
    """

    #: The pydantic model of this connector's settings (``qanat collect`` validates with it).
    settings_model: ClassVar[type[PullSourceSettings]] = PullSourceSettings

    @abc.abstractmethod
    def poll(self, cursor: Any) -> Iterable[Page]:
        """Fetch what is new since ``cursor`` (None on the very first poll), page by page.
        Each page's ``cursor`` is saved once its records are in Kafka, and is what the
        next call (after a restart too) receives."""

    def run(self) -> None:
        schedule = self.settings.schedule
        logger.info("source %s (%s) polls %s", self.name, self.kind, schedule.describe())
        # An interval starts with a poll; a cron schedule waits for its first time.
        started = datetime.now(UTC)
        next_at = started if self.once or not schedule.cron else schedule.next_after(started)
        failures = 0
        while self.running:
            if self.wait((next_at - datetime.now(UTC)).total_seconds()):
                return
            started = datetime.now(UTC)
            next_at = schedule.next_after(started)
            try:
                count = self.poll_once()
                failures = 0
                logger.info("source %s: %d records", self.name, count)
            except SourceStoppedError:
                return
            except RetriableError as exc:
                if self.once:
                    raise
                failures += 1
                retry_at = started + timedelta(seconds=self.settings.retry.delay(failures))
                next_at = min(next_at, retry_at)
                logger.warning("source %s: poll failed, again at %s: %s", self.name, next_at, exc)
            if self.once:
                return

    def poll_once(self) -> int:
        """One poll: produce every page and save the cursor after each; then the
        ingestion summary. A poll cut short (stop, crash) goes on with the same ingestion
        id from the saved cursor. Returns how many records this call produced."""
        checkpoint = self.load_checkpoint()
        cursor = checkpoint.get("cursor")
        ingestion = checkpoint.get("ingestion") or {"id": new_id(), "accepted": 0}
        produced = 0
        try:
            for page in self.poll(cursor):
                produced += self.produce_records(page.records, ingestion["id"])
                ingestion["accepted"] += len(page.records)
                cursor = page.cursor
                self.save_checkpoint({"cursor": cursor, "ingestion": ingestion})
                if self.stopping:
                    return produced
        except BadDataError as exc:
            logger.error("source %s: bad data, skipped: %s", self.name, exc)
        if ingestion["accepted"]:
            self.produce_summary(ingestion["id"], ingestion["accepted"])
        self.save_checkpoint({"cursor": cursor, "ingestion": None})
        return produced
