"""The pure parts of the file import benchmark: its CSV, and the baseline's records being
exactly what ``qanat import`` publishes for that file."""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks import file_import
from benchmarks.run import BENCHMARKS
from pipelines.config import KafkaSettings
from sources.files import FileImporter, FileImportSettings, ImportReport
from sources.files_mapping import parse_pairs
from sources.files_readers import CsvReader


def test_registered() -> None:
    assert BENCHMARKS["file_import"] is file_import.BENCHMARK


def test_baseline_records_are_what_the_import_publishes(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    file_import.write_csv(path, 50)
    values, keys = file_import.expected_values(path)
    assert len(values) == len(keys) == 50
    assert keys[0] == b"shop/product/p-00000000"

    args = file_import.IMPORT_ARGS
    settings = FileImportSettings(
        mapping=parse_pairs([args[1], args[3]], "--map"),
        cast=parse_pairs([args[5]], "--cast"),
    )
    importer = FileImporter(KafkaSettings(), settings, path, "shop", "product", tmp_path)
    report = ImportReport("ing", "file", "csv")
    with path.open("rb") as raw:
        reader = CsvReader(raw, importer._options())
        events = [importer._event(row, report) for row in reader.rows()]
    assert [orjson.loads(event[0]) for event in events if event] == [
        orjson.loads(value) for value in values
    ]
    assert [f"shop/product/{event[1]}".encode() for event in events if event] == keys


def test_peak_rss_of_an_ended_process_is_zero() -> None:
    assert file_import.peak_rss(2**22 + 12345) == 0
