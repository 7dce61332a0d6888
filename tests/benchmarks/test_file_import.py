"""The pure parts of the file import benchmark: its files, and the baseline's records being
exactly what ``qanat import`` publishes for that CSV."""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks import file_import
from benchmarks.run import BENCHMARKS
from sources.files.mapping import parse_pairs
from tests.sources.files_helpers import published


def test_registered() -> None:
    assert BENCHMARKS["file_import"] is file_import.BENCHMARK


def test_baseline_records_are_what_the_import_publishes(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    file_import.write_csv(path, 50)
    values, keys = file_import.expected_values(path)
    assert len(values) == len(keys) == 50
    assert keys[0] == b"shop/product/p-00000000"

    args = file_import.IMPORT_ARGS
    mapping = parse_pairs([args[1], args[3]], "--map")
    cast = parse_pairs([args[5]], "--cast")
    producer, report = published(path.read_bytes(), tmp_path, mapping=mapping, cast=cast)
    assert report.produced == 50
    assert [(key, orjson.loads(value)) for key, value, _ in producer.sent] == [
        (key, orjson.loads(value)) for key, value in zip(keys, values, strict=True)
    ]


def test_the_ndjson_and_json_files_hold_the_same_records(tmp_path: Path) -> None:
    values = [b'{"source_id":"a","name":"A"}', b'{"source_id":"b","name":"B"}']
    files = file_import.write_json_files(tmp_path, values)
    assert files["ndjson"].read_bytes().splitlines() == values
    assert orjson.loads(files["json"].read_bytes()) == [orjson.loads(v) for v in values]


def test_peak_rss_of_an_ended_process_is_zero() -> None:
    assert file_import.peak_rss(2**22 + 12345) == 0
