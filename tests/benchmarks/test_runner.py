"""The pure parts of the benchmark runner: results, RESULTS.md, the generated data."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from benchmarks import common, run, transform_throughput
from benchmarks.run import BENCHMARKS, parse_args
from pipelines.core.records import RawMeta
from pipelines.core.topics import decode_headers
from pipelines.transform.schemas import SchemaStore

FIELDS = [
    "name",
    "date",
    "commit",
    "metric",
    "value",
    "baseline",
    "baseline_value",
    "ratio",
    "target",
    "details",
]


def test_result_has_exactly_the_contract_fields(tmp_path: Path) -> None:
    result = common.make_result(
        "demo", "records/s", 50.0, "passthrough", 200.0, "ratio >= 0.5", {"records": 10}
    )
    path = common.write_result(result, tmp_path / "results")
    loaded = orjson.loads(path.read_bytes())
    assert list(loaded) == FIELDS
    assert loaded["ratio"] == 0.25
    assert loaded["date"].endswith("Z") and "T" in loaded["date"]
    assert loaded["commit"]


@pytest.mark.parametrize(
    ("ratio", "target", "met"),
    [
        (0.6, "ratio >= 0.5", True),
        (0.4, "ratio >= 0.5", False),
        (1.2, "ratio <= 1.5", True),
        (2.0, "ratio <= 1.5", False),
        (1.0, None, None),
        (1.0, "fast enough", None),
    ],
)
def test_target_met(ratio: float, target: str | None, met: bool | None) -> None:
    assert common.target_met(ratio, target) is met


def test_results_md_has_one_row_per_result_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for name, ratio in (("b_bench", 0.2), ("a_bench", 0.8)):
        common.write_result(
            common.make_result(
                name, "records/s", ratio * 100, "base | line", 100.0, "ratio >= 0.5"
            ),
            results,
        )
    markdown = common.write_markdown(results).read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 3  # header + two rows, sorted by name
    assert table[1].startswith("| a_bench |") and "| yes |" in table[1]
    assert table[2].startswith("| b_bench |") and "| **no** |" in table[2]
    assert "base \\| line" in table[1]
    assert "python -m benchmarks.run" in markdown
    assert "a_bench" in common.render_table(common.load_results(results))


def test_results_md_is_written_inside_a_results_dir_of_ones_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--results-dir DIR`` gets DIR/RESULTS.md (it was written beside DIR); the
    repository's own results keep benchmarks/RESULTS.md."""

    def stub(_ctx: common.BenchContext) -> common.BenchResult:
        return common.make_result("stub", "records/s", 60.0, "base", 100.0, "ratio >= 0.5")

    monkeypatch.setitem(BENCHMARKS, "stub", common.Benchmark("stub", "a stub", stub))
    monkeypatch.setenv(common.BOOTSTRAP_ENV, "127.0.0.1:9")  # "external": no broker started
    results = tmp_path / "out"
    assert run.main(["stub", "--results-dir", str(results)]) == 0
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert written == ["out", "out/RESULTS.md", "out/stub.json"]
    markdown = (results / "RESULTS.md").read_text()
    assert "| stub |" in markdown and "the `*.json` files beside it" in markdown
    assert common.markdown_path(common.RESULTS_DIR) == common.BENCH_DIR / "RESULTS.md"


def test_generated_events_follow_the_contract_and_the_mix() -> None:
    schema = orjson.loads(transform_throughput.SCHEMA_FILE.read_bytes())
    store = SchemaStore({("shop", "product"): schema})
    events = list(transform_throughput.generate(2000))
    invalid = sum(not valid for _, valid in events)
    assert 120 < invalid < 280  # ~10%
    sizes = [len(event.value) for event, _ in events]
    assert 150 < sum(sizes) / len(sizes) < 250  # ~200 bytes
    for event, valid in events:
        meta = RawMeta.from_headers(decode_headers(event.headers))
        obj = orjson.loads(event.value)
        assert (not store.validate(meta.vertical, meta.type, obj)[1]) is valid
        expected_key = f"shop/product/{obj['source_id']}" if "source_id" in obj else meta.event_id
        assert event.key == expected_key


def test_cli_knows_the_benchmarks() -> None:
    assert {"transform_throughput_valid", "transform_throughput_half_invalid"} <= set(BENCHMARKS)
    assert parse_args(["transform_throughput_valid", "--records", "10"]).records == 10
    with pytest.raises(SystemExit):
        parse_args(["no_such_benchmark"])
