"""Stopping ``qanat import`` (``sources/files/stop.py``): a signal only sets a flag, the
loops stop at a safe point, and the checkpoint holds the last record produced and the
reader's real byte offset (CSV and JSON arrays had stored 0, so a resumed import said it
was "resuming at 0.0 of 12.3 MB"); against the real broker, every record lands once."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from sources.files.delivery import Delivery
from sources.files.source import FileImporter, FileImportSettings, Progress
from sources.files.stop import Interrupted, StopFlag, stop_on_signals
from tests.kafka_helpers import consume

ROWS = 30_000
STOP_AT = 12_000
READ_AHEAD = 128 * 1024  # what the text layer (8 KiB) or ijson (64 KiB) reads ahead, at most


def test_signals_set_the_flag_instead_of_raising_and_the_handlers_come_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, at once
        assert stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted):
            stop.check()
    assert {signum: signal.getsignal(signum) for signum in before} == before


class FullQueue:
    """A producer whose local queue is always full; a stop is requested while waiting."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.polls = 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        raise BufferError

    def poll(self, _timeout: float = 0) -> int:
        self.polls += 1
        if self.polls == 3:
            self.stop(signal.SIGINT, None)
        return 0


def test_a_stop_is_noticed_while_waiting_for_room_in_the_queue() -> None:
    stop = StopFlag()
    producer = FullQueue(stop)
    delivery = Delivery(KafkaSettings(), 1.0, producer, stop)  # type: ignore[arg-type]
    with pytest.raises(Interrupted):
        delivery.produce("raw", b"{}", b"k", [])
    assert producer.polls == 3
    assert delivery.chunk.pending == 0, "the record was not produced"


class StopAt(Progress):
    """Requests a stop, as SIGINT's handler does, at the first update past ``records``;
    keeps what ``start`` was told."""

    def __init__(self, stop: StopFlag | None = None, records: int = 0) -> None:
        self.stop, self.records = stop, records
        self.started: tuple[int, int, int] | None = None

    def start(self, total_bytes: int, offset: int, records: int) -> None:
        self.started = (total_bytes, offset, records)

    def update(self, offset: int, records: int) -> None:
        if self.stop is not None and records >= self.records:
            self.stop(signal.SIGINT, None)


def write_records(path: Path, fmt: str, rows: int = ROWS) -> list[int]:
    """A CSV (id, title, price) or JSON-array file of ``rows`` records, source ids r0, r1,
    ... (CSV: in the id column); the byte offset just after each record."""
    ends: list[int] = []
    if fmt == "csv":
        lines = [b"id,title,price\n"] + [
            b"r%d,Product %d,%d.5\n" % (n, n, n % 97) for n in range(rows)
        ]
        size = len(lines[0])
        for line in lines[1:]:
            size += len(line)
            ends.append(size)
        path.write_bytes(b"".join(lines))
        return ends
    items = [orjson.dumps({"source_id": f"r{n}", "name": f"Product {n}"}) for n in range(rows)]
    size = 1  # the array's "["
    for item in items:
        ends.append(size + len(item))
        size += len(item) + 1  # and its ","
    path.write_bytes(b"[" + b",".join(items) + b"]")
    return ends


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_stopped_import_checkpoints_its_last_record_at_the_readers_offset(
    kafka: KafkaSettings, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"products.{fmt}"
    ends = write_records(path, fmt)
    mapping = {"source_id": "id"} if fmt == "csv" else {}
    settings = FileImportSettings(mapping=mapping, checkpoint_every=100_000)

    def importer() -> FileImporter:
        return FileImporter(kafka, settings, path, "shop", "product", tmp_path / "state")

    stop = StopFlag()
    with pytest.raises(Interrupted):
        importer().run(StopAt(stop, STOP_AT), stop=stop)
    saved = orjson.loads(next((tmp_path / "state").glob("*.json")).read_bytes())
    assert saved["number"] == STOP_AT, "stopped at the mark that saw the request"
    assert saved["produced"] == STOP_AT
    exact = ends[STOP_AT - 1]
    assert exact <= saved["offset"] <= exact + READ_AHEAD, (exact, saved["offset"])

    resumed = StopAt()
    report = importer().run(resumed)
    assert resumed.started == (path.stat().st_size, saved["offset"], STOP_AT)
    assert report.completed and report.resumed_after == STOP_AT
    assert (report.read, report.produced) == (ROWS - STOP_AT, ROWS)

    landed = consume(kafka, kafka.topics.raw, expected=ROWS, timeout=60)
    assert len(landed) == ROWS, "every record exactly once: none lost, none resent"
    assert Counter(m.key for m in landed) == {f"shop/product/r{n}".encode(): 1 for n in range(ROWS)}
