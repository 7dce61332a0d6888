"""The pure parts of the HTTP ingest benchmarks: generated data, sizing, RSS reading."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from benchmarks import http_ingest, http_ingest_service, http_ingest_stream
from benchmarks.common import BenchContext
from benchmarks.run import BENCHMARKS
from pipelines.core.topics import decode_headers


def test_both_benchmarks_are_registered() -> None:
    assert {"http_batch_ingest", "ndjson_stream_memory"} <= set(BENCHMARKS)


def test_ndjson_lines_are_objects_of_the_exact_size_with_unique_source_ids() -> None:
    lines = 3_000  # more than TEMPLATES, across several chunks
    chunks = list(http_ingest_stream.ndjson_chunks(lines))
    assert len(chunks) > 1
    assert all(len(chunk) <= http_ingest_stream.CHUNK_BYTES for chunk in chunks)
    body = b"".join(chunks)
    assert len(body) == lines * http_ingest_stream.LINE_BYTES
    parsed = [orjson.loads(line) for line in body.splitlines()]
    assert len(parsed) == lines
    assert all(isinstance(obj, dict) and obj["name"] for obj in parsed)
    assert [obj["source_id"] for obj in parsed] == [f"ndjson-{i:010d}" for i in range(lines)]


def test_ndjson_generation_is_lazy() -> None:
    chunks = http_ingest_stream.ndjson_chunks(10**12)  # would never fit in memory
    assert len(next(chunks)) <= http_ingest_stream.CHUNK_BYTES


def _ctx(tmp_path: Path, records: int | None) -> BenchContext:
    return BenchContext("127.0.0.1:9092", records, 1, tmp_path, "test")


def test_stream_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(http_ingest_stream.SIZE_ENV, raising=False)
    assert http_ingest_stream.stream_lines(_ctx(tmp_path, 123)) == 123
    default = http_ingest_stream.stream_lines(_ctx(tmp_path, None))
    assert default * http_ingest_stream.LINE_BYTES == 1024**3
    monkeypatch.setenv(http_ingest_stream.SIZE_ENV, "2")
    two_mb = http_ingest_stream.stream_lines(_ctx(tmp_path, None))
    assert two_mb * http_ingest_stream.LINE_BYTES == 2 * 1024**2


def test_batches_and_baseline_events_match_what_the_service_makes() -> None:
    batches = http_ingest.batch_records(2_500)
    assert [len(b) for b in batches] == [1_000, 1_000, 500]
    bodies = http_ingest.batch_bodies(batches)
    assert orjson.loads(bodies[2])["records"] == batches[2]
    events = http_ingest.baseline_events(batches)
    assert len(events) == 2_500
    first = events[0]
    assert orjson.loads(first.value) == batches[0][0]
    assert first.key == f"shop/product/{batches[0][0]['source_id']}"
    headers = decode_headers(first.headers)
    assert headers["qanat.source"] == "http"
    assert headers["qanat.vertical"] == "shop"
    ingestions = {decode_headers(e.headers)["qanat.ingestion_id"] for e in events}
    assert len(ingestions) == 3  # one per request, as the service does


def test_rss_of_this_process() -> None:
    assert 1024 * 1024 < http_ingest_service.rss_bytes(os.getpid()) < 64 * 1024**3


def test_timeline_keeps_the_last_sample() -> None:
    samples = [(i * 0.2, (100 + i) * 1024 * 1024) for i in range(55)]
    picked = http_ingest_stream.timeline(samples, points=10)
    assert picked[0] == [0.0, 100.0]
    assert picked[-1] == [10.8, 154.0]
    assert len(picked) <= 12
    assert http_ingest_stream.timeline([]) == []


@pytest.mark.parametrize(
    ("value", "met"), [(98.6, True), (100.0, False), (250.0, False), (None, None)]
)
def test_the_memory_target_is_judged_on_the_value(value: float | None, met: bool | None) -> None:
    from benchmarks.common import target_met

    assert target_met(0.1, http_ingest_stream.TARGET_STREAM, value) is met


def test_results_md_fills_met_for_the_memory_target(tmp_path: Path) -> None:
    from benchmarks import common

    result = common.make_result(
        http_ingest_stream.NAME_STREAM,
        "MB RSS growth",
        42.0,
        http_ingest_stream.BASELINE_STREAM,
        1024.0,
        http_ingest_stream.TARGET_STREAM,
    )
    common.write_result(result, tmp_path)
    row = next(
        line
        for line in common.render_markdown(common.load_results(tmp_path)).splitlines()
        if line.startswith("| ndjson_stream_memory")
    )
    assert "| yes |" in row
