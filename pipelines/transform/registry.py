"""The schema registry: every version of every JSON Schema, in the compacted schemas topic
(its keys, values and reader are :mod:`pipelines.transform.schematopic`).

:class:`SchemaRegistry` reads and writes it (the CLI, the control plane);
:class:`SchemaFollower` keeps a transform replica's :class:`SchemaStore` current, so a new
version is in use within seconds, without a restart.

Two writers may propose the same version at once (two control-plane replicas): the topic
has one partition, so its order decides. The first record of a version wins, for every
reader; a writer reads back after writing, and if another proposal came first it tries
the next version (or, for the same schema, takes the winner's). A record that is not a
schema version (malformed, or a tombstone of no accepted version) is skipped with a
warning.

Neither commits offsets: each reads the whole topic from the beginning with assign + seek.

>>> error = InvalidSchemaError([{"path": "$.type", "message": "not a known type"}])
>>> str(error)
'not a valid JSON Schema: 1 error(s), first at $.type: not a known type'
>>> isinstance(SchemaConflictError("taken"), RegistryUnavailableError)
True
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import QanatError
from pipelines.core.records import check_identifier, now
from pipelines.core.topics import ensure_topics
from pipelines.transform.schemas import SchemaKey, SchemaStore, read_schema_files, schema_errors
from pipelines.transform.schematopic import (
    RegistryUnavailableError,
    SchemaVersion,
    TopicReader,
    parse_message,
    proposal_key,
)

logger = logging.getLogger(__name__)


def _canonical(schema: Any) -> bytes:
    """Equal bytes for equal JSON (key order aside); unlike ``==``, 1, 1.0 and true differ."""
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


class InvalidSchemaError(QanatError, ValueError):
    """Not a draft 2020-12 JSON Schema; ``errors`` holds every reason, each with its path."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        first = errors[0] if errors else {"path": "$", "message": "invalid"}
        super().__init__(
            f"not a valid JSON Schema: {len(errors)} error(s), "
            f"first at {first['path']}: {first['message']}"
        )
        self.errors = errors


class SchemaConflictError(RegistryUnavailableError):
    """Other writers took every version this writer proposed; nothing of it is in use.
    Like an unavailable topic, worth a retry (the control plane answers 503)."""


class SchemaRegistry:
    """Reads and writes the schemas topic; thread-safe. Each read first catches up."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 15.0, attempts: int = 5) -> None:
        self.kafka = kafka
        self.timeout = timeout
        self.attempts = attempts
        self._lock = threading.Lock()
        self._reader: TopicReader | None = None
        self._producer: Producer | None = None
        self._versions: dict[SchemaKey, dict[int, SchemaVersion]] = {}
        self._keys: dict[tuple[str, str, int], str] = {}  # the accepted record's key

    # --- reading -----------------------------------------------------------------------

    def load(self) -> None:
        """Catch up with the topic: everything written before this call is known after it."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._reader is None:
            ensure_topics(
                self.kafka.client(),
                self.kafka.topics,
                self.kafka.partitions,
                self.kafka.replication_factor,
                timeout=self.timeout,
            )
            self._reader = TopicReader(self.kafka, self.timeout)
        for message in self._reader.until_end():
            parsed = parse_message(message)
            if parsed is None:
                continue
            key, found = parsed
            if found is None:
                self._delete(key)
            else:
                self._accept(key, found)

    def _accept(self, key: str, found: SchemaVersion) -> None:
        """Keep the first record of each version; a later one lost a race, or repeats it."""
        versions = self._versions.setdefault((found.vertical, found.type), {})
        if found.version in versions:
            return
        errors = schema_errors(found.schema)
        if errors:  # never written by a registry: it checks before it writes
            logger.warning(
                "skipping schemas message %r: not a valid JSON Schema: %s", key, errors[0]
            )
        else:
            versions[found.version] = found
            self._keys[(found.vertical, found.type, found.version)] = key

    def _delete(self, key: str) -> None:
        """A tombstone deletes the version whose accepted record its key names."""
        parts = key.split("/")
        if len(parts) in (3, 4) and parts[2].isascii() and parts[2].isdigit():
            name = (parts[0], parts[1], int(parts[2]))
            if self._keys.get(name) == key:
                del self._keys[name]
                self._versions[(name[0], name[1])].pop(name[2], None)
                logger.info("schema %s/%s version %d deleted by a tombstone", *name)
                return
        logger.warning("skipping a tombstone of %r: it names no accepted schema version", key)

    def _latest(self, vertical: str, type_: str) -> SchemaVersion | None:
        versions = self._versions.get((vertical, type_))
        return versions[max(versions)] if versions else None

    def latest(self, vertical: str, type_: str) -> SchemaVersion | None:
        """The newest version of ``vertical``/``type_``, or None when none is registered."""
        with self._lock:
            self._load()
            return self._latest(vertical, type_)

    def get(self, vertical: str, type_: str, version: int) -> SchemaVersion | None:
        with self._lock:
            self._load()
            return self._versions.get((vertical, type_), {}).get(version)

    def versions(self, vertical: str, type_: str) -> list[int]:
        with self._lock:
            self._load()
            return sorted(self._versions.get((vertical, type_), {}))

    def list(self) -> list[SchemaVersion]:
        """The latest version of every registered vertical/type, sorted by vertical/type."""
        with self._lock:
            self._load()
            found = (self._latest(v, t) for v, t in sorted(self._versions))
            return [version for version in found if version is not None]

    # --- writing -----------------------------------------------------------------------

    def register(self, vertical: str, type_: str, schema: Any) -> int:
        """Store ``schema`` as the next version and return it; an unchanged schema keeps
        the latest version and writes nothing. Raises InvalidSchemaError with every reason."""
        return self.put(vertical, type_, schema)[0]

    def put(self, vertical: str, type_: str, schema: Any) -> tuple[int, bool]:
        """:meth:`register`, also saying whether a new version was written."""
        check_identifier("vertical", vertical)
        check_identifier("type", type_)
        errors = schema_errors(schema)
        if errors:
            raise InvalidSchemaError(errors)
        with self._lock:
            for _attempt in range(self.attempts):
                self._load()
                latest = self._latest(vertical, type_)
                if latest is not None and _canonical(latest.schema) == _canonical(schema):
                    return latest.version, False
                version = 1 if latest is None else latest.version + 1
                entry = SchemaVersion(vertical, type_, version, schema, now())
                key = proposal_key(vertical, type_, version, uuid.uuid4().hex[:16])
                self._produce(key, entry)
                self._load()  # read back: the first proposal of a version wins
                if self._keys.get((vertical, type_, version)) == key:
                    return version, True
                logger.info("%s/%s version %d went to another writer", vertical, type_, version)
            raise SchemaConflictError(
                f"{vertical}/{type_}: every version proposed in {self.attempts} attempts "
                "went to other writers; try again"
            )

    def _produce(self, key: str, entry: SchemaVersion) -> None:
        if self._producer is None:
            self._producer = Producer(
                self.kafka.client(
                    **{
                        "acks": "all",
                        "enable.idempotence": True,
                        "delivery.timeout.ms": int(self.timeout * 1000),
                    }
                )
            )
        outcome: list[KafkaError | None] = []
        self._producer.produce(
            self.kafka.topics.schemas,
            key=key.encode(),
            value=orjson.dumps(entry.to_json()),
            on_delivery=lambda err, _msg: outcome.append(err),
        )
        self._producer.flush(self.timeout)
        if not outcome or outcome[0] is not None:
            reason = outcome[0] if outcome else "no acknowledgement in time"
            raise RegistryUnavailableError(
                f"{entry.vertical}/{entry.type} version {entry.version} not stored: {reason}"
            )

    def seed(self, root: Path) -> dict[SchemaKey, int]:
        """Register ``root/{vertical}/{type}.json`` (unchanged files write nothing); every
        bad file is reported at once in a ConfigError. Returns the version of each."""
        files = read_schema_files(root)
        return {key: self.register(*key, schema) for key, schema in files.items()}

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None


class SchemaFollower:
    """A daemon thread that keeps ``store`` at the newest version of every schema."""

    def __init__(
        self, kafka: KafkaSettings, store: SchemaStore, timeout: float = 15.0, poll: float = 0.5
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.timeout = timeout
        self.poll_interval = poll
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qanat-schema-follower", daemon=True)
        self._failure: BaseException | None = None

    def start(self, wait: bool = True) -> SchemaFollower:
        """Start following; with ``wait``, return once every existing version is applied."""
        self._thread.start()
        if wait and not self.ready.wait(self.timeout):
            raise RegistryUnavailableError(
                f"{self.kafka.topics.schemas} not read within {self.timeout}s: {self._failure}"
            )
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout)

    def _apply(self, message: Message) -> None:
        parsed = parse_message(message)
        if parsed is None:
            return
        key, found = parsed
        if found is None:  # the store keeps the newest version; deleting one is no reason
            logger.warning("skipping a tombstone of %r on the schemas topic", key)
            return
        current = self.store.version(found.vertical, found.type)
        if current is not None and current >= found.version:
            return  # an older version, or a later proposal of this one (it lost a race)
        try:
            self.store.put(found.vertical, found.type, found.schema, found.version)
        except Exception as exc:  # SchemaError, or one no validator can compile
            logger.error(
                "schema %s/%s version %d is not usable, keeping version %s: %s",
                found.vertical,
                found.type,
                found.version,
                current,
                getattr(exc, "message", exc),
            )
            return
        logger.info("schema %s/%s now at version %d", found.vertical, found.type, found.version)

    def _run(self) -> None:
        reader: TopicReader | None = None
        while not self._stopping.is_set():
            try:
                if reader is None:
                    reader = TopicReader(self.kafka, self.timeout)
                if not self.ready.is_set():
                    for message in reader.until_end():
                        self._apply(message)
                    self.ready.set()
                message = reader.poll(self.poll_interval)
                if message is not None:
                    self._apply(message)
            except Exception as exc:  # keep the current schemas; try again shortly
                self._failure = exc
                logger.warning("schema follower: %s; retrying", exc)
                if reader is not None:
                    reader.close()
                    reader = None
                self._stopping.wait(1.0)
        if reader is not None:
            reader.close()


def follow_schemas(
    kafka: KafkaSettings, seed_dir: Path | None = None, timeout: float = 15.0
) -> tuple[SchemaStore, SchemaFollower]:
    """A live SchemaStore: seed the registry from ``seed_dir``, then follow the topic.

    Returns once every registered version is in the store."""
    if seed_dir is not None:
        registry = SchemaRegistry(kafka, timeout)
        try:
            registry.seed(seed_dir)
        finally:
            registry.close()
    store = SchemaStore()
    follower = SchemaFollower(kafka, store, timeout).start()
    return store, follower
