"""The file readers and the column mapping (pure logic: no broker)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from sources.files.mapping import RecordShaper, parse_pairs
from sources.files.readers import (
    UNPARSED,
    CsvReader,
    FileFormatError,
    JsonArrayReader,
    NdjsonReader,
    Position,
    ReadOptions,
    detect_format,
)
from sources.files.source import FileImporter, FileImportSettings, ImportReport
from sources.files.state import Checkpoint, fingerprint


def _rows(reader: CsvReader | NdjsonReader | JsonArrayReader) -> list[tuple[int, int, object]]:
    return [(row.number, row.line, row.error or row.obj) for row in reader.rows()]


def test_csv_quoted_cells_across_lines_bom_blank_lines_and_bad_rows() -> None:
    data = b'\xef\xbb\xbfid,title\n1,"two\nlines"\n\n2,x,extra\n3,ok\n'
    reader = CsvReader(io.BytesIO(data), ReadOptions())
    assert _rows(reader) == [
        (1, 2, {"id": "1", "title": "two\nlines"}),
        (2, 5, "expected 2 cells (as in the header), got 3"),
        (3, 6, {"id": "3", "title": "ok"}),
    ]
    assert reader.offset == len(data)
    assert reader.line == 6


def test_csv_resumes_at_a_position_with_the_same_numbers_and_lines() -> None:
    data = b'id,title\n1,"a\nb"\n2,c\n3,d\n'
    first = CsvReader(io.BytesIO(data), ReadOptions())
    rows = first.rows()
    next(rows)
    position = Position(1, first.line, first.offset)
    resumed = CsvReader(io.BytesIO(data), ReadOptions(), position)
    assert _rows(resumed) == [(2, 4, {"id": "2", "title": "c"}), (3, 5, {"id": "3", "title": "d"})]


def test_csv_reads_other_delimiters() -> None:
    options = ReadOptions(delimiter=";")
    reader = CsvReader(io.BytesIO(b"id;title\n7;Lamp\n"), options)
    assert _rows(reader) == [(1, 2, {"id": "7", "title": "Lamp"})]


def test_csv_without_a_header_is_an_error() -> None:
    with pytest.raises(FileFormatError):
        CsvReader(io.BytesIO(b""), ReadOptions())


def test_ndjson_keeps_unparsable_lines_and_reports_long_ones() -> None:
    long_line = b'{"name": "' + b"x" * 100 + b'"}'
    data = b'{"name": "a"}\n\nnot json\n' + long_line + b"\n[1]\n" + b'{"name": "b"}'
    reader = NdjsonReader(io.BytesIO(data), ReadOptions(max_record_bytes=50))
    rows = list(reader.rows())
    assert [(row.number, row.line) for row in rows] == [(1, 1), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert rows[0].obj == {"name": "a"} and rows[0].raw == b'{"name": "a"}'
    assert rows[1].obj is UNPARSED and rows[1].raw == b"not json"
    assert rows[2].error == "the line is over 50 bytes"
    assert rows[3].obj == [1]
    assert rows[4].obj == {"name": "b"}
    assert reader.offset == len(data)


def test_ndjson_resumes_after_an_offset() -> None:
    data = b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    reader = NdjsonReader(io.BytesIO(data), ReadOptions(), Position(1, 1, 9))
    assert _rows(reader) == [(2, 2, {"n": 2}), (3, 3, {"n": 3})]


def test_json_array_streams_items_under_a_prefix_and_skips_on_resume() -> None:
    data = orjson.dumps({"records": [{"n": 1}, {"n": 2.5}, 3]})
    options = ReadOptions(json_items="records.item")
    assert _rows(JsonArrayReader(io.BytesIO(data), options)) == [
        (1, 0, {"n": 1}),
        (2, 0, {"n": 2.5}),
        (3, 0, 3),
    ]
    resumed = JsonArrayReader(io.BytesIO(data), options, Position(2))
    assert _rows(resumed) == [(3, 0, 3)]


def test_a_broken_json_array_says_after_which_record() -> None:
    reader = JsonArrayReader(io.BytesIO(b'[{"n": 1}, {"n": '), ReadOptions())
    with pytest.raises(FileFormatError, match="after record 1"):
        list(reader.rows())


def test_format_from_the_extension() -> None:
    assert [detect_format(n) for n in ("a.CSV", "b.ndjson", "c.jsonl", "d.json")] == [
        "csv",
        "ndjson",
        "ndjson",
        "json",
    ]
    with pytest.raises(ValueError, match="--format"):
        detect_format("data.txt")


def test_mapping_wins_over_an_existing_field_and_casts_after_mapping() -> None:
    shaper = RecordShaper({"name": "title"}, {"qty": "int", "ok": "bool", "tags": "json"})
    shaped = shaper.shape({"name": "old", "title": "new", "qty": "3", "ok": "no", "tags": "[1]"})
    assert shaped == {"name": "new", "qty": 3, "ok": False, "tags": [1]}
    with pytest.raises(ValueError, match="unknown cast"):
        RecordShaper({}, {"x": "date"})
    with pytest.raises(ValueError, match="FIELD=COLUMN"):
        parse_pairs(["name"], "--map")


def _importer(tmp_path: Path, name: str, **settings: object) -> FileImporter:
    return FileImporter(
        KafkaSettings(),
        FileImportSettings(**settings),  # type: ignore[arg-type]
        tmp_path / name,
        "shop",
        "product",
        tmp_path / "state",
    )


def test_record_values_and_keys(tmp_path: Path) -> None:
    """Own source ids are kept; without one the position key becomes the source_id; NDJSON
    lines are published as they are when nothing changes them."""
    importer = _importer(tmp_path, "p.ndjson", file_id="f1")
    importer._file_id = "f1"
    report = ImportReport("ing", "f1", "ndjson")
    lines = list(
        NdjsonReader(
            io.BytesIO(b'{"name": "a", "source_id": "s1"}\n{"name": "b"}\nbad\n'), ReadOptions()
        ).rows()
    )
    assert importer._event(lines[0], report) == (b'{"name": "a", "source_id": "s1"}', "s1")
    assert importer._event(lines[1], report) == (b'{"name":"b","source_id":"f1:2"}', "f1:2")
    assert importer._event(lines[2], report) == (b"bad", "f1:3")


def test_fingerprint_and_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"id\n1\n")
    copy = tmp_path / "b.csv"
    copy.write_bytes(path.read_bytes())
    assert fingerprint(path) == fingerprint(copy)
    copy.write_bytes(b"id\n2\n")
    assert fingerprint(path) != fingerprint(copy)

    checkpoint = Checkpoint(tmp_path / "state", "f", "digest-1")
    assert checkpoint.load() is None
    checkpoint.save("ing-1", Position(5, 6, 70), 4)
    assert checkpoint.load() == ("ing-1", Position(5, 6, 70), 4)
    assert Checkpoint(tmp_path / "state", "f", "digest-2").load() is None  # other settings
    checkpoint.remove()
    assert checkpoint.load() is None
