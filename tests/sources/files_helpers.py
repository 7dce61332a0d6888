"""Running the import's publishing loops without a broker, for pure-logic tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.core.config import KafkaSettings
from sources.files.delivery import Delivery, Saver
from sources.files.readers import CsvReader, Position, ReadOptions
from sources.files.run import Run
from sources.files.source import FileImporter, FileImportSettings, ImportReport, Progress
from sources.files.state import Checkpoint, fingerprint


class RecordingProducer:
    """Stands in for the confluent producer in the pure-logic tests: keeps what is produced
    and reports each record delivered at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None:
        self.sent.append((key, value, kwargs["headers"]))
        kwargs["on_delivery"](None, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


def published(
    data: bytes,
    tmp_path: Path,
    fast: bool = True,
    start: Position | None = None,
    **settings: Any,
) -> tuple[RecordingProducer, ImportReport]:
    """What the CSV fast path (or the general loop, ``fast=False``) produces for ``data``."""
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    importer = FileImporter(
        KafkaSettings(), FileImportSettings(**settings), path, "shop", "product", tmp_path / "s"
    )
    importer._file_id = fingerprint(path)
    producer = RecordingProducer()
    delivery = Delivery(KafkaSettings(), 1.0, producer)
    report = ImportReport("ingestion-1", importer._file_id, "csv")
    saver = Saver(Checkpoint(tmp_path / "s", "f", "d"), "ingestion-1", 1_000, 60.0)
    run = Run("raw", "shop", "product", report, delivery, saver, Progress())
    with path.open("rb") as raw:
        reader = CsvReader(
            raw,
            ReadOptions(max_record_bytes=importer.settings.max_record_bytes),
            start or Position(),
        )
        if fast:
            importer._publish(run, reader)
        else:
            importer._publish_all(run, reader)
    return producer, report
