"""File import: ``qanat import`` of a large CSV, its speed and its memory.

* ``file_import`` - one CSV of ``records`` rows (default 1,000,000: ``id``, ``title``,
  ``price``, ``category``, ``in_stock``, ``description``), written to the run's work
  directory, imported by the real command (``python -m pipelines.cli.main import FILE --vertical
  shop --type product --map source_id=id --map name=title --cast price=float --progress
  none``) in a child process against the run's broker. The value is records/s over the
  import's own time (the report's ``seconds``: from opening the file to Kafka's last
  acknowledgement, checkpoints included; not the interpreter's start-up). The baseline is
  a raw confluent-kafka ``Producer`` in this process sending the same records (the same
  JSON values, keys and contract headers the import makes, built before the timing) with
  the import's producer settings (idempotent, ``acks=all``, lz4, ``linger.ms=5``, the same
  queue limits, a delivery report per record), timed after one warm-up event to the end of
  its ``flush``. Each side runs ``repeats`` times, alternating; the best run of each
  counts. Target: ratio >= 0.5. The details give the child's peak RSS (its ``VmHWM``, read
  every 50 ms) and its growth over the same command importing a 10-row file (target:
  growth < 100 MB, flat whatever the file's size).

  The same records as an NDJSON file and as a JSON array (the values the CSV import
  publishes, imported without mapping) are imported in the same rounds; the details give
  their seconds and ratios against the same baseline (``formats``): CSV takes the fast
  path of ``sources.files.csvfast``, NDJSON and JSON the general loop of ``sources.files.source``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from benchmarks.common import (
    ROOT,
    BenchContext,
    Benchmark,
    BenchResult,
    environment,
    git_dirty,
    make_result,
)
from benchmarks.http_ingest_service import bench_kafka
from benchmarks.http_ingest_stream import MB
from benchmarks.transform_throughput import delete_topics, end_offset
from pipelines.core.config import KafkaSettings
from pipelines.core.records import now
from pipelines.core.topics import (
    H_CONTENT_TYPE,
    H_EVENT_ID,
    H_INGESTION_ID,
    H_RECEIVED_AT,
    H_SOURCE,
    H_TYPE,
    H_VERTICAL,
    record_key,
)
from sources.files.delivery import PRODUCER_CONFIG, QUEUE_LIMITS
from sources.files.source import SOURCE

NAME = "file_import"
DEFAULT_RECORDS = 1_000_000
SMALL_RECORDS = 10
VERTICAL, TYPE = "shop", "product"
SEED = 20260303
TARGET = "ratio >= 0.5"
RSS_TARGET_MB = 100.0
BASELINE = (
    "raw confluent-kafka Producer in one process, same records (JSON values, keys, headers), "
    "topic and producer settings (idempotent, acks=all, lz4, queue limits, a delivery report "
    "per record), all deliveries awaited, same run"
)
IMPORT_ARGS = ("--map", "source_id=id", "--map", "name=title", "--cast", "price=float")
CATEGORIES = ("lighting", "furniture", "garden", "kitchen", "office")
_WORDS = ("oak", "lamp", "steel", "blue", "small", "round", "tall", "matte")
DESCRIPTIONS = [" ".join(_WORDS[(i >> (3 * k)) % 8] for k in range(6)) for i in range(4096)]


def write_csv(path: Path, rows: int, seed: int = SEED) -> None:
    """``rows`` product rows with a header, written as they are generated."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,title,price,category,in_stock,description\n")
        for index in range(rows):
            price = rng.randint(100, 99_999) / 100
            category = CATEGORIES[index % len(CATEGORIES)]
            in_stock = "true" if rng.random() < 0.8 else "false"
            words = DESCRIPTIONS[rng.randrange(len(DESCRIPTIONS))]
            out.write(f'p-{index:08d},"Product {index}, {category}",{price},{category},')
            out.write(f'{in_stock},"{words}"\n')


def write_json_files(directory: Path, values: list[bytes]) -> dict[str, Path]:
    """The records (serialized ``values``) as an NDJSON file and as a JSON array."""
    ndjson, array = directory / "products.ndjson", directory / "products.json"
    with ndjson.open("wb") as out:
        for value in values:
            out.write(value + b"\n")
    with array.open("wb") as out:
        out.write(b"[")
        for index, value in enumerate(values):
            out.write(b",\n" + value if index else value)
        out.write(b"]\n")
    return {"ndjson": ndjson, "json": array}


def expected_values(path: Path) -> tuple[list[bytes], list[bytes]]:
    """The values and keys ``qanat import`` makes of the file with ``IMPORT_ARGS``."""
    import csv

    values: list[bytes] = []
    keys: list[bytes] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            source_id = row.pop("id")
            record: dict[str, Any] = {"name": row.pop("title")}
            record |= row
            record["price"] = float(row["price"])
            values.append(orjson.dumps({**record, "source_id": source_id}))
            keys.append(record_key(VERTICAL, TYPE, source_id).encode())
    return values, keys


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The import's producer settings (``sources.files.delivery.Delivery``)."""
    return kafka.client(**PRODUCER_CONFIG, **QUEUE_LIMITS)


def raw_produce(kafka: KafkaSettings, values: list[bytes], keys: list[bytes]) -> float:
    """Seconds to produce every record with contract headers and have it acknowledged."""
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(producer_config(kafka))
    topic = kafka.topics.raw
    head = [
        (H_VERTICAL, VERTICAL.encode()),
        (H_TYPE, TYPE.encode()),
        (H_SOURCE, SOURCE.encode()),
        (H_INGESTION_ID, str(uuid.uuid4()).encode()),
    ]
    tail = [(H_RECEIVED_AT, now().encode()), (H_CONTENT_TYPE, b"application/json")]
    event_ids = [str(uuid.uuid4()).encode() for _ in values]
    producer.produce(topic, values[0], keys[0], headers=[*head, *tail])
    if producer.flush(30):  # connected, idempotent producer id acquired, before the timing
        raise RuntimeError("raw producer: the warm-up event was not delivered")
    start = time.perf_counter()
    for index, (value, key, event_id) in enumerate(zip(values, keys, event_ids, strict=True)):
        headers = [*head, (H_EVENT_ID, event_id), *tail]
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.005)  # the import's wait (sources.files.delivery.Delivery)
        if index % 1_000 == 0:  # serve delivery reports, as the import does
            producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - start
    if remaining or failures:
        raise RuntimeError(f"raw producer: {remaining} undelivered, errors {failures[:1]}")
    return seconds


def run_import(
    kafka: KafkaSettings, path: Path, data_dir: Path, args: tuple[str, ...] = IMPORT_ARGS
) -> tuple[dict[str, Any], int]:
    """``qanat import`` of ``path`` in a child process: (its report, its peak RSS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_DATA_DIR": str(data_dir),
        "QANAT_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "pipelines.cli.main", "import", str(path)]
    command += ["--vertical", VERTICAL, "--type", TYPE, *args]
    command += ["--progress", "none", "--restart"]
    out, err = data_dir / "import.out", data_dir / "import.err"
    data_dir.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        peak = 0
        while child.poll() is None:
            peak = max(peak, peak_rss(child.pid))
            time.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"qanat import failed: {err.read_text(errors='replace')[-2000:]}")
    report: dict[str, Any] = orjson.loads(out.read_bytes().splitlines()[-1])
    return report, peak


def peak_rss(pid: int) -> int:
    """The peak RSS of process ``pid`` so far (``VmHWM``: since its exec, so not the
    parent's pages it shared before), or 0 once it has ended."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:  # noqa: PTH123
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _check(kafka: KafkaSettings, before: int, expected: int, side: str) -> int:
    after = end_offset(kafka, kafka.topics.raw)
    if after - before != expected:
        raise RuntimeError(f"{side}: {after - before} records landed, expected {expected}")
    return after


def run(ctx: BenchContext) -> BenchResult:
    records = ctx.records or DEFAULT_RECORDS
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    big, small = ctx.work_dir / "products.csv", ctx.work_dir / "small.csv"
    write_csv(big, records)
    write_csv(small, SMALL_RECORDS)
    values, keys = expected_values(big)
    others = write_json_files(ctx.work_dir, values)
    kafka = bench_kafka(ctx)
    data_dir = ctx.work_dir / "data"
    try:
        _, small_peak = run_import(kafka, small, data_dir)
        offset = end_offset(kafka, kafka.topics.raw)
        imports: list[tuple[dict[str, Any], int]] = []
        baseline_runs: list[float] = []
        other_runs: dict[str, list[tuple[dict[str, Any], int]]] = {name: [] for name in others}
        for _ in range(ctx.repeats):
            imports.append(run_import(kafka, big, data_dir))
            offset = _check(kafka, offset, records, "qanat import")
            baseline_runs.append(raw_produce(kafka, values, keys))
            offset = _check(kafka, offset, records + 1, "raw producer")  # + its warm-up
            for name, path in others.items():
                other_runs[name].append(run_import(kafka, path, data_dir, ()))
                offset = _check(kafka, offset, records, f"qanat import ({name})")
    finally:
        delete_topics(kafka, list(kafka.topics.all()))
    best_import = min(report["seconds"] for report, _ in imports)
    best_baseline = min(baseline_runs)
    peak = max(rss for _, rss in imports)
    growth_mb = (peak - small_peak) / MB
    details = {
        "records": records,
        "file_mb": round(big.stat().st_size / MB, 1),
        "import_seconds": [report["seconds"] for report, _ in imports],
        "baseline_seconds": [round(s, 3) for s in baseline_runs],
        "rss_peak_mb": round(peak / MB, 1),
        "rss_peak_small_file_mb": round(small_peak / MB, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "rss_growth_target": f"< {RSS_TARGET_MB:.0f} MB",
        "rss_growth_met": growth_mb < RSS_TARGET_MB,
        "import_args": " ".join(IMPORT_ARGS),
        "formats": {
            name: _format_details(runs, records, best_baseline) for name, runs in other_runs.items()
        },
        "repeats": ctx.repeats,
        "broker": ctx.broker,
        "dirty_tree": git_dirty(),
        "environment": environment(),
    }
    return make_result(
        NAME,
        "records/s",
        records / best_import,
        BASELINE,
        records / best_baseline,
        TARGET,
        details,
    )


def _format_details(
    runs: list[tuple[dict[str, Any], int]], records: int, best_baseline: float
) -> dict[str, Any]:
    """An NDJSON or JSON import's seconds, ratio (best run) and peak RSS."""
    seconds = [report["seconds"] for report, _ in runs]
    return {
        "import_seconds": seconds,
        "records_per_s": round(records / min(seconds), 3),
        "ratio": round(best_baseline / min(seconds), 4),
        "rss_peak_mb": round(max(rss for _, rss in runs) / MB, 1),
    }


BENCHMARK = Benchmark(NAME, "qanat import of a large CSV vs a raw producer; RSS growth", run)
