"""One run of ``qanat import``: its report, its progress display, and what its publishing
loops share (the topic, the contract headers, event ids, the producer and checkpoints).

Two loops publish records: the general one of :mod:`sources.files.source` (NDJSON, JSON arrays)
and the CSV fast path of :mod:`sources.files.csvfast`. Both call :meth:`Run.mark` every
``POLL_EVERY`` records: it ends a delivery chunk, checkpoints what Kafka acknowledged when
due, updates the progress display, and stops the import if Ctrl-C or SIGTERM asked it to
(:mod:`sources.files.stop`).

>>> report = ImportReport("ing-1", "f1", "csv")
>>> report.reject(Row(3, 4, None, None), "expected 2 cells (as in the header), got 3")
>>> report.body()["errors"]
[{'record': 3, 'line': 4, 'message': 'expected 2 cells (as in the header), got 3'}]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipelines.core.records import now
from pipelines.core.topics import (
    H_CONTENT_TYPE,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    Headers,
)
from sources.files.delivery import Chunk, Delivery, Saver
from sources.files.readers import Row
from sources.files.state import EventIds

logger = logging.getLogger(__name__)

SOURCE = "file"
POLL_EVERY = 1_000  # records between producer polls, progress updates and checkpoint checks


@dataclass
class ImportReport:
    """What an import did; ``produced`` counts the records of every run of the file."""

    ingestion_id: str
    file_id: str
    format: str
    resumed_after: int = 0
    read: int = 0
    produced: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False
    seconds: float = 0.0
    max_errors: ClassVar[int] = 100

    def reject(self, row: Row, message: str) -> None:
        self.rejected += 1
        logger.warning("record %d (line %d) not imported: %s", row.number, row.line, message)
        if len(self.errors) < self.max_errors:
            self.errors.append({"record": row.number, "line": row.line, "message": message})

    def body(self) -> dict[str, Any]:
        return {
            "ingestion_id": self.ingestion_id,
            "file_id": self.file_id,
            "format": self.format,
            "completed": self.completed,
            "resumed_after": self.resumed_after,
            "read": self.read,
            "produced": self.produced,
            "rejected": self.rejected,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }


class Progress:
    """Told how far the import got; the CLI shows it (a rich bar, or plain lines)."""

    def start(self, total_bytes: int, offset: int, records: int) -> None:
        """Called once, before the first record."""

    def update(self, offset: int, records: int) -> None:
        """Called every few thousand records."""

    def finish(self, offset: int, records: int) -> None:
        """Called once at the end, complete or not."""


class Run:
    """Where one run's records go and what they share: every record's headers are
    ``head``, its own event id, then :meth:`tail` (``received_at`` is refreshed at each
    mark, so it is the time the record was read to within ``POLL_EVERY`` records)."""

    def __init__(
        self,
        topic: str,
        vertical: str,
        type_: str,
        report: ImportReport,
        delivery: Delivery,
        saver: Saver,
        progress: Progress,
    ) -> None:
        self.topic = topic
        self.key_prefix = f"{vertical}/{type_}/"
        self.report = report
        self.delivery = delivery
        self.saver = saver
        self.progress = progress
        self.event_ids = EventIds()
        self.head: Headers = [
            (H_VERTICAL, vertical.encode()),
            (H_TYPE, type_.encode()),
            (H_SOURCE, SOURCE.encode()),
            (H_INGESTION_ID, report.ingestion_id.encode()),
        ]

    @staticmethod
    def tail() -> Headers:
        return [(H_RECEIVED_AT, now().encode()), (H_CONTENT_TYPE, b"application/json")]

    def mark(self, row: Row, offset: int, read: int, produced: int) -> Chunk:
        """After ``row`` (``read`` records read by this run, ``produced`` in all; the
        reader at byte ``offset``): end the delivery chunk, checkpoint when due, show the
        progress; the chunk to produce in. :class:`~sources.files.stop.Interrupted` if a
        stop was requested (the row is the last one handed to the producer)."""
        self.report.read, self.report.produced = read, produced
        self.saver.row = row if row.end else row._replace(end=offset)
        self.saver.mark(self.delivery, read, produced)
        self.progress.update(offset, produced)
        self.delivery.stop.check()
        return self.delivery.chunk
