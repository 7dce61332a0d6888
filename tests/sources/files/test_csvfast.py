"""The CSV fast path of ``qanat import`` (``sources/files/csvfast.py``): the compiled row
builder, the same records and keys as the general loop and as qanat before the fast path
(so a re-import after an upgrade upserts the same records), and, against the real broker,
an interrupted import resumed with every record in Kafka exactly once."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import (
    H_CONTENT_TYPE,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
)
from sources.files.mapping import RecordShaper
from sources.files.readers import Position
from sources.files.source import FileImporter, FileImportSettings, Progress
from sources.files.state import fingerprint
from tests.kafka_helpers import consume
from tests.sources.files_helpers import published

GOLDEN_CSV = (
    b"id,title,price,qty\n"
    b"p1,Lamp,9.5,3\n"
    b'p2,"Desk, oak",n/a,\n'
    b",No id,1,1\n"
    b"\n"
    b'p4,"two\nlines",2.25,x\n'
    b"p5,short\n"
    b"p6,Chair,,7\n"
)
GOLDEN_FILE_ID = "1231d3971185c3f3265e"
# What qanat published for GOLDEN_CSV before the fast path (commit 9883d52's general loop),
# with --map source_id=id --map name=title --cast price=float --cast qty=int: a re-import
# must key (and here even serialize) every record the same, so the store upserts it.
GOLDEN_MAPPED = [
    (b'{"source_id":"p1","name":"Lamp","price":9.5,"qty":3}', "p1"),
    (b'{"source_id":"p2","name":"Desk, oak","price":"n/a","qty":null}', "p2"),
    (b'{"source_id":"","name":"No id","price":1.0,"qty":1}', f"{GOLDEN_FILE_ID}:3"),
    (b'{"source_id":"p4","name":"two\\nlines","price":2.25,"qty":"x"}', "p4"),
    (b'{"source_id":"p6","name":"Chair","price":null,"qty":7}', "p6"),
]
# ... and with --map name=title only: every key is the record's position in the file.
GOLDEN_POSITIONS = [
    (b'{"id":"p1","name":"Lamp","price":"9.5","qty":"3","source_id":"%s:1"}', 1),
    (b'{"id":"p2","name":"Desk, oak","price":"n/a","qty":"","source_id":"%s:2"}', 2),
    (b'{"id":"","name":"No id","price":"1","qty":"1","source_id":"%s:3"}', 3),
    (b'{"id":"p4","name":"two\\nlines","price":"2.25","qty":"x","source_id":"%s:4"}', 4),
    (b'{"id":"p6","name":"Chair","price":"","qty":"7","source_id":"%s:6"}', 6),
]
GOLDEN_ERRORS = [{"record": 5, "line": 8, "message": "expected 4 cells (as in the header), got 2"}]
MAPPED: dict[str, Any] = {
    "mapping": {"source_id": "id", "name": "title"},
    "cast": {"price": "float", "qty": "int"},
}
HEADER_NAMES = [H_VERTICAL, H_TYPE, H_SOURCE, H_INGESTION_ID, H_EVENT_ID, H_RECEIVED_AT]
HEADER_NAMES.append(H_CONTENT_TYPE)
UUID = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_the_row_builder_maps_and_casts_like_the_shaper() -> None:
    shaper = RecordShaper(
        {"name": "title", "source_id": "id"},
        {"qty": "int", "ok": "bool", "tags": "json", "price": "float", "note": "str"},
    )
    header = ["name", "id", "title", "qty", "ok", "tags", "price", "note", "x", "x"]
    build = shaper.row_builder(header)
    cases = [
        ["old", "7", "new", "3", "yes", "[1]", "9.5", "n", "a", "b"],
        ["old", "8", "new", " 4 ", "No", " ", "", "", "", "c"],
        ["old", "9", "new", "three", "maybe", "{bad", "n/a", "1", "", ""],
    ]
    for cells in cases:
        expected = shaper.shape(dict(zip(header, cells, strict=True)))
        assert build(cells) == expected
    assert build(cases[0]) == {
        "name": "new",
        "source_id": "7",
        "qty": 3,
        "ok": True,
        "tags": [1],
        "price": 9.5,
        "note": "n",
        "x": "b",
    }
    assert build(cases[1])["tags"] is None and build(cases[1])["price"] is None
    assert build(cases[2])["qty"] == "three" and build(cases[2])["ok"] == "maybe"
    # The mapped column wins whichever comes first (before the fast path, a CSV's later
    # column won: a header ``id,source_id`` with --map source_id=id took the file's own).
    for names in (["id", "source_id"], ["source_id", "id"]):
        mapped = RecordShaper({"source_id": "id"}, {}).row_builder(names)
        assert mapped(["a", "b"] if names[0] == "id" else ["b", "a"]) == {"source_id": "a"}
    # A header name is data, never code.
    sneaky = RecordShaper({}, {}).row_builder(['"}; import os #', "a b"])
    assert sneaky(["1", "2"]) == {'"}; import os #': "1", "a b": "2"}


@pytest.mark.parametrize(
    ("settings", "golden"), [(MAPPED, "mapped"), ({"mapping": {"name": "title"}}, "positions")]
)
def test_the_same_values_and_keys_as_before_the_fast_path(
    tmp_path: Path, settings: dict[str, Any], golden: str
) -> None:
    producer, report = published(GOLDEN_CSV, tmp_path, **settings)
    assert fingerprint(tmp_path / "data.csv") == GOLDEN_FILE_ID
    if golden == "mapped":
        expected = [(value, f"shop/product/{sid}".encode()) for value, sid in GOLDEN_MAPPED]
    else:
        expected = [
            (value % GOLDEN_FILE_ID.encode(), f"shop/product/{GOLDEN_FILE_ID}:{n}".encode())
            for value, n in GOLDEN_POSITIONS
        ]
    assert [(value, key) for key, value, _ in producer.sent] == expected
    assert report.errors == GOLDEN_ERRORS
    assert (report.read, report.produced, report.rejected) == (6, 5, 1)
    assert [[name for name, _ in headers] for _, _, headers in producer.sent] == [HEADER_NAMES] * 5
    event_ids = [dict(headers)[H_EVENT_ID] for _, _, headers in producer.sent]
    assert len(set(event_ids)) == 5 and all(UUID.match(event_id) for event_id in event_ids)
    assert {dict(headers)[H_INGESTION_ID] for _, _, headers in producer.sent} == {b"ingestion-1"}


EDGE_CSV = (
    "idempotency_key,title,name,source_id,n\n"
    'k1,"new, title",old,s1,1\n'
    "k2,t2,o2,,2\n"
    ",t3,o3,,3\n"
    "k4,t4\n"
    f"k5,{'x' * 300},o5,s5,5\n"
    "k6,t6,o6,s6,six\n"
    "\n\n"
    'k7,"multi\r\nline",o7,s7,7\n'
    "k8,t8,o8,s8,8,extra\n"
    "k9,t9,o9,s9,9\n"
).encode() + b"k10,bad \xff utf-8,o10,s10,10\n"


@pytest.mark.parametrize(
    "settings",
    [
        {"mapping": {"name": "title"}, "cast": {"n": "int"}, "max_record_bytes": 200},
        {"mapping": {"source_id": "idempotency_key"}},
        {"mapping": {"other": "n"}, "cast": {"other": "float"}},
        {},
    ],
)
def test_the_fast_path_publishes_what_the_general_loop_does(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    """Own source ids, idempotency keys, empty ids, mapping over an existing column, bad
    rows, blank lines, a multi-line cell, invalid UTF-8, a record over the size limit."""
    fast, fast_report = published(EDGE_CSV, tmp_path, **settings)
    general, general_report = published(EDGE_CSV, tmp_path, fast=False, **settings)
    assert [(key, orjson.loads(value)) for key, value, _ in fast.sent] == [
        (key, orjson.loads(value)) for key, value, _ in general.sent
    ]
    assert fast_report.body() | {"seconds": 0} == general_report.body() | {"seconds": 0}
    assert fast_report.rejected >= 2


def test_a_cell_over_the_csv_modules_limit_is_reported_and_the_import_goes_on(
    tmp_path: Path,
) -> None:
    huge = b"x" * (csv.field_size_limit() + 1)
    data = b"id,title\np1,a\np2," + huge + b"\n\np3,c\n"
    for fast in (True, False):
        producer, report = published(data, tmp_path, fast=fast, mapping={"source_id": "id"})
        assert [key for key, _, _ in producer.sent] == [b"shop/product/p1", b"shop/product/p3"]
        assert report.errors == [
            {
                "record": 2,
                "line": 3,
                "message": f"unreadable CSV row: field larger than field limit "
                f"({csv.field_size_limit()})",
            }
        ]
    resumed, _ = published(data, tmp_path, start=Position(2, 3, 0), mapping={"source_id": "id"})
    assert [key for key, _, _ in resumed.sent] == [b"shop/product/p3"]


def test_a_resumed_read_continues_after_the_checkpoints_record(tmp_path: Path) -> None:
    data = b"id,title\n" + b"".join(b"p%d,t%d\n\n" % (n, n) for n in range(1, 2_501))
    whole, _ = published(data, tmp_path, mapping={"source_id": "id"})
    resumed, report = published(
        data, tmp_path, start=Position(1_200, 0, 0), mapping={"source_id": "id"}
    )
    assert [key for key, _, _ in resumed.sent] == [key for key, _, _ in whole.sent][1_200:]
    assert report.read == 1_300


class InterruptAfter(Progress):
    """Interrupts the import (as Ctrl-C does) at the first progress update past ``records``."""

    def __init__(self, records: int) -> None:
        self.records = records

    def update(self, offset: int, records: int) -> None:
        if records >= self.records:
            raise KeyboardInterrupt


@pytest.mark.integration
def test_an_interrupted_csv_import_resumes_with_each_record_in_kafka_once(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    rows = 30_000
    path = tmp_path / "products.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("id,title,price\n")
        out.writelines(f"p{n},Product {n},{n % 97}.5\n" for n in range(rows))
        out.write("short row\n")
    settings = FileImportSettings(**MAPPED | {"cast": {"price": "float"}}, checkpoint_every=1)

    def importer() -> FileImporter:
        return FileImporter(kafka, settings, path, "shop", "product", tmp_path / "state")

    with pytest.raises(KeyboardInterrupt):
        importer().run(InterruptAfter(12_000))
    saved = orjson.loads(next((tmp_path / "state").glob("*.json")).read_bytes())
    assert 12_000 <= saved["number"] < rows

    report = importer().run()
    assert report.completed and report.resumed_after == saved["number"]
    assert (report.produced, report.rejected) == (rows, 1)
    assert report.errors == [
        {
            "record": rows + 1,
            "line": rows + 2,
            "message": "expected 3 cells (as in the header), got 1",
        }
    ]
    assert report.ingestion_id == saved["ingestion_id"]

    landed = consume(kafka, kafka.topics.raw, expected=rows, timeout=60)
    assert len(landed) == rows, "every record exactly once: none lost, none resent"
    assert Counter(m.key for m in landed) == {f"shop/product/p{n}".encode(): 1 for n in range(rows)}
    first = next(m for m in landed if m.key == b"shop/product/p7")
    assert orjson.loads(first.value or b"") == {
        "source_id": "p7",
        "name": "Product 7",
        "price": 7.5,
    }
    assert list(first.headers) == HEADER_NAMES
    assert {m.headers[H_INGESTION_ID] for m in landed} == {saved["ingestion_id"]}
    assert len({m.headers[H_EVENT_ID] for m in landed}) == rows


@pytest.mark.integration
def test_the_golden_file_lands_with_the_keys_it_had_before_the_fast_path(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    path = tmp_path / "golden.csv"
    path.write_bytes(GOLDEN_CSV)
    settings = FileImportSettings(**MAPPED)
    report = FileImporter(kafka, settings, path, "shop", "product", tmp_path / "state").run()
    assert report.errors == GOLDEN_ERRORS
    landed = consume(kafka, kafka.topics.raw, expected=5, timeout=30, settle=0.5)
    assert sorted((m.key, m.value) for m in landed) == sorted(
        (f"shop/product/{sid}".encode(), value) for value, sid in GOLDEN_MAPPED
    )
