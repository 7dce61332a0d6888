"""``qanat import``: publish a CSV, NDJSON or JSON-array file to the raw topic.

The file is read incrementally (:mod:`sources.files.readers`), each record shaped by the
column mapping and casts (:mod:`sources.files.mapping`) and produced under one ingestion
id; once every record is acknowledged, the ingestion summary goes to the ingestions topic.
A CSV file takes the fast path of :mod:`sources.files.csvfast`; NDJSON and JSON arrays the
general loop here. Both publish the same records for the same rows.

An interrupted import run again duplicates nothing:

* every record is keyed deterministically: its ``source_id`` (mapped or its own), else
  ``<file id>:<record number>`` (the file id is a fingerprint of the file's size and
  content at both ends, or ``file_id``), which is added to the record as its
  ``source_id``; a re-run re-keys identically, and the store's upsert makes it harmless;
* and progress is checkpointed: every ``checkpoint_every`` records (or
  ``checkpoint_interval_s``) the position after the last record Kafka acknowledged (with
  every record before it) is written to ``<state dir>/<file id>.json``, without waiting
  for the producer (:mod:`sources.files.delivery`); a re-run resumes there, under the same
  ingestion id, and the checkpoint is removed when the import completes. Asked to stop
  (Ctrl-C or SIGTERM set the :class:`~sources.files.stop.StopFlag`), the loop stops at
  its next safe point, flushes, and checkpoints the last record produced, so a re-run
  resends nothing.

A record that cannot be published (a CSV row with the wrong number of cells or that the
csv module cannot read, a record over ``max_record_bytes``) is reported with its line; a
line that is not JSON, or not an object, is published unchanged, so the transform
dead-letters it with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipelines.core.config import KafkaSettings, QanatSettings
from pipelines.core.records import MAX_SOURCE_ID_LENGTH, client_source_id, new_id
from pipelines.core.topics import H_EVENT_ID
from sources.base import ingestion_summary
from sources.files.csvfast import publish_csv
from sources.files.delivery import Delivery, Saver
from sources.files.mapping import Cast, RecordShaper
from sources.files.readers import (
    CsvReader,
    FileFormatError,
    Position,
    Reader,
    ReadOptions,
    Row,
    detect_format,
    open_reader,
)
from sources.files.run import POLL_EVERY, SOURCE, ImportReport, Progress, Run
from sources.files.state import Checkpoint, fingerprint
from sources.files.stop import StopFlag

__all__ = ["SOURCE", "FileImportSettings", "FileImporter", "ImportReport", "Progress"]

logger = logging.getLogger(__name__)


class FileImportSettings(QanatSettings):
    """How ``qanat import`` reads and publishes a file (the CLI options override these)."""

    yaml_section: ClassVar[str] = "import"
    model_config = SettingsConfigDict(env_prefix="QANAT_IMPORT_", extra="forbid")

    format: Literal["auto", "csv", "ndjson", "json"] = Field(
        "auto", description="File format; auto: from the extension (.csv, .ndjson/.jsonl, .json)."
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Record field -> the column it comes from (e.g. name: title, source_id: id).",
        examples=[{"name": "title", "source_id": "id"}],
    )
    cast: dict[str, Cast] = Field(
        default_factory=dict,
        description="Field (after mapping) -> str, int, float, bool or json, for text cells.",
        examples=[{"price": "float", "in_stock": "bool"}],
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV cell delimiter.")
    encoding: str = Field("utf-8", description="Text encoding of a CSV file.")
    json_items: str = Field(
        "item",
        description="ijson prefix of the records in a JSON file: item for a top-level array, "
        "records.item for {'records': [...]}.",
    )
    file_id: str | None = Field(
        None,
        description="Names the file in record keys and checkpoints instead of its fingerprint.",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
    )
    checkpoint_every: int = Field(
        50_000, ge=1, description="Records between checkpoints (of what Kafka acknowledged)."
    )
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="Seconds between checkpoints, at most."
    )
    max_record_bytes: int = Field(
        1_000_000, ge=1, description="A longer line is reported instead of published."
    )
    delivery_timeout_s: float = Field(
        60.0, gt=0, description="How long Kafka may take to acknowledge a record."
    )


class FileImporter:
    """Publishes one file's records to the raw topic (see the module's docstring).

    >>> from pathlib import Path
    >>> from pipelines.core.config import KafkaSettings
    >>> importer = FileImporter(KafkaSettings(), FileImportSettings(mapping={"name": "title"}),
    ...                         Path("products.csv"), "shop", "product", Path(".qanat/imports"))
    >>> importer.format
    'csv'

    ``importer.run()`` (with a broker at ``kafka.bootstrap_servers``) returns the
    :class:`ImportReport`; ``qanat import products.csv --vertical shop --type product
    --map name=title`` does the same with a progress bar.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: FileImportSettings,
        path: Path,
        vertical: str,
        type_: str,
        state_dir: Path,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.path = path
        self.vertical = vertical
        self.type = type_
        self.state_dir = state_dir
        self.format = detect_format(path.name) if settings.format == "auto" else settings.format
        self.shaper = RecordShaper(settings.mapping, settings.cast)
        self._file_id = settings.file_id or ""
        self._reshape = self.shaper.changes_rows
        self._keep_raw = self.format == "ndjson" and not self.shaper.changes_rows

    def _options(self) -> ReadOptions:
        s = self.settings
        return ReadOptions(s.delimiter, s.encoding, s.json_items, s.max_record_bytes)

    def _digest(self) -> str:
        relevant = self.settings.model_dump(
            exclude={"checkpoint_every", "checkpoint_interval_s", "delivery_timeout_s"}
        )
        relevant |= {"vertical": self.vertical, "type": self.type, "format": self.format}
        relevant |= {"topic": self.kafka.topics.raw}
        return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def run(
        self, progress: Progress | None = None, restart: bool = False, stop: StopFlag | None = None
    ) -> ImportReport:
        """Import the file (resuming an interrupted import unless ``restart``); raise
        RetriableError if Kafka fails, FileFormatError if the file breaks off, and
        KeyboardInterrupt when interrupted (:class:`~sources.files.stop.Interrupted` once
        ``stop`` is set, e.g. by :func:`~sources.files.stop.stop_on_signals`), each after
        checkpointing what was acknowledged (on an interruption: every record produced)."""
        progress = progress or Progress()
        stop = stop or StopFlag()
        self._file_id = self.settings.file_id or fingerprint(self.path)
        checkpoint = Checkpoint(self.state_dir, self._file_id, self._digest())
        resumed = None if restart else checkpoint.load()
        ingestion_id, start, produced = resumed or (new_id(), Position(), 0)
        report = ImportReport(ingestion_id, self._file_id, self.format, start.number)
        report.produced = produced
        if resumed:
            logger.info("resuming %s after record %d", self.path, start.number)
        delivery = Delivery(self.kafka, self.settings.delivery_timeout_s, stop=stop)
        saver = Saver(
            checkpoint,
            ingestion_id,
            self.settings.checkpoint_every,
            self.settings.checkpoint_interval_s,
        )
        began = time.monotonic()
        with self.path.open("rb") as raw:
            reader = open_reader(self.format, raw, self._options(), start)
            # A CSV or JSON reader skips to its start as it reads: where it resumes is the
            # checkpoint's offset (an NDJSON reader is there already).
            offset = max(start.offset, reader.offset)
            progress.start(self.path.stat().st_size, offset, report.produced)
            run = Run(
                self.kafka.topics.raw, self.vertical, self.type, report, delivery, saver, progress
            )
            try:
                self._publish(run, reader)
                stop.check()  # asked to stop after the last mark: the summary waits
                summary = ingestion_summary(
                    ingestion_id, self.vertical, self.type, SOURCE, report.produced
                )
                topic = self.kafka.topics.ingestions
                delivery.produce(topic, summary.value, summary.key.encode(), [])
                delivery.flush()
            except (KeyboardInterrupt, FileFormatError):
                saver.save(delivery, report.produced, reader.offset)
                raise
            finally:
                delivery.producer.flush(delivery.timeout_s)
                report.seconds = time.monotonic() - began
                progress.finish(reader.offset, report.produced)
        checkpoint.remove()
        report.completed = True
        return report

    def _publish(self, run: Run, reader: Reader) -> None:
        if isinstance(reader, CsvReader):
            build = self.shaper.row_builder(reader.header)
            publish_csv(run, reader, build, self.source_key, self.settings.max_record_bytes)
        else:
            self._publish_all(run, reader)

    def _publish_all(self, run: Run, reader: Reader) -> None:
        """The general loop (NDJSON, JSON arrays): one :class:`Row` at a time."""
        report, delivery = run.report, run.delivery
        produce, topic, key_prefix = delivery.producer.produce, run.topic, run.key_prefix
        head, tail, event_ids = run.head, run.tail(), run.event_ids
        id_format, id_prefix, id_count = event_ids.FORMAT, event_ids.prefix, event_ids.count
        read, produced = report.read, report.produced
        chunk = delivery.chunk
        try:
            for row in reader.rows():
                read += 1
                event = self._event(row, report)
                if event is not None:
                    id_count += 1
                    headers = [*head, (H_EVENT_ID, id_format % (id_prefix, id_count)), *tail]
                    key = (key_prefix + event[1]).encode()
                    try:
                        produce(topic, event[0], key, headers=headers, on_delivery=chunk)
                        chunk.pending += 1
                    except BufferError:
                        delivery.produce(topic, event[0], key, headers)
                    produced += 1
                run.saver.row = row
                if read % POLL_EVERY == 0:
                    chunk = run.mark(row, reader.offset, read, produced)
                    tail = run.tail()
        finally:
            event_ids.count = id_count
            report.read, report.produced = read, produced

    def _event(self, row: Row, report: ImportReport) -> tuple[bytes, str] | None:
        """(value, source id) to publish for ``row``, or None when it is reported instead.

        The value is the record shaped by the mapping and casts, with its position's key
        as ``source_id`` when it has none; an NDJSON line nothing changes goes unchanged,
        and so does a line that is not a JSON object (the transform dead-letters it)."""
        if row.error is not None:
            report.reject(row, row.error)
            return None
        obj = row.obj
        if type(obj) is not dict:  # not JSON, or not an object
            return row.raw or orjson.dumps(obj), self._position_key(row.number)
        if self._reshape:
            obj = self.shaper.shape(obj)
        value: bytes | None = row.raw if self._keep_raw else None
        fields = len(obj)
        source_id = self.source_key(obj, row.number)
        if value is None or len(obj) != fields:  # changed, or given its source_id
            try:
                value = orjson.dumps(obj)
            except (TypeError, UnicodeError) as exc:  # orjson: e.g. invalid UTF-8 in a cell
                report.reject(row, f"cannot be serialized as JSON: {exc}")
                return None
        if len(value) > self.settings.max_record_bytes:
            report.reject(row, f"the record is over {self.settings.max_record_bytes} bytes")
            return None
        return value, source_id

    def source_key(self, obj: dict[str, Any], number: int) -> str:
        """The source id of record ``number`` (``obj``): its own (``source_id``, else
        ``idempotency_key``) when usable, else its position's key, which becomes its
        ``source_id`` when it has neither field."""
        own = obj.get("source_id")
        if isinstance(own, str) and 0 < len(own) <= MAX_SOURCE_ID_LENGTH:  # the common case
            return own
        source_id = client_source_id(obj)
        if source_id is None:
            source_id = self._position_key(number)
            if "source_id" not in obj and "idempotency_key" not in obj:
                obj["source_id"] = source_id
        return source_id

    def _position_key(self, number: int) -> str:
        return f"{self._file_id}:{number}"
