"""Run the benchmarks: ``python -m benchmarks.run [names...] [--records N] [--repeats R]``.

Starts the project's local Apache Kafka broker (``pipelines.devbroker.LocalBroker``) in a
temporary directory, unless ``QANAT_BENCH_KAFKA_BOOTSTRAP`` names a broker to use; runs
the selected benchmarks (default: all); writes ``benchmarks/results/<name>.json`` for each,
regenerates ``benchmarks/RESULTS.md`` from every result file, and prints the table. With
``--results-dir DIR`` both go inside ``DIR`` (``DIR/<name>.json``, ``DIR/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks import (
    dlq_replay,
    file_import,
    http_ingest,
    sink_throughput,
    transform_throughput,
)
from benchmarks.common import (
    BOOTSTRAP_ENV,
    RESULTS_DIR,
    BenchContext,
    Benchmark,
    BenchResult,
    render_table,
    write_markdown,
    write_result,
)
from pipelines.devbroker import LocalBroker, free_port
from pipelines.devbroker_jars import KAFKA_VERSION

logger = logging.getLogger("benchmarks")

BENCHMARKS: dict[str, Benchmark] = {
    bench.name: bench
    for bench in (
        *transform_throughput.BENCHMARKS,
        *sink_throughput.BENCHMARKS,
        *http_ingest.BENCHMARKS,
        file_import.BENCHMARK,
        *dlq_replay.BENCHMARKS,
    )
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Run qanat's benchmarks against a real Kafka broker.",
        epilog=f"Set {BOOTSTRAP_ENV}=host:port to use a running broker instead of the local one.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--records",
        type=_positive,
        default=None,
        help="events per benchmark (default: each benchmark's own)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=2,
        help="runs of each side, alternating; the best counts (default: 2)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where <name>.json and their RESULTS.md go (default: benchmarks/results, "
        "its RESULTS.md in benchmarks/)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    return args


@contextmanager
def kafka_broker(work_dir: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap, description): the broker named by the env, else a fresh local one."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external, f"external ({BOOTSTRAP_ENV})"
        return
    broker = LocalBroker(work_dir / "kafka", port=free_port(), heap="768m")
    logger.info("starting the local Apache Kafka %s broker", KAFKA_VERSION)
    bootstrap = broker.start()
    try:
        yield bootstrap, f"local Apache Kafka {KAFKA_VERSION} (pipelines.devbroker)"
    finally:
        broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for bench in BENCHMARKS.values():
            print(f"{bench.name}: {bench.description}")
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
    )
    selected = [BENCHMARKS[name] for name in (args.names or BENCHMARKS)]
    results: list[BenchResult] = []
    failed: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="qanat-bench-") as tmp,
        kafka_broker(Path(tmp)) as (bootstrap, broker),
    ):
        for bench in selected:
            print(f"running {bench.name} ...", file=sys.stderr, flush=True)
            ctx = BenchContext(
                bootstrap=bootstrap,
                records=args.records,
                repeats=args.repeats,
                work_dir=Path(tmp) / bench.name,
                broker=broker,
            )
            try:
                result = bench.run(ctx)
            except Exception:
                logger.exception("benchmark %s failed", bench.name)
                failed.append(bench.name)
                continue
            path = write_result(result, args.results_dir)
            print(f"wrote {path}", file=sys.stderr)
            results.append(result)
    markdown = write_markdown(args.results_dir)
    print(f"wrote {markdown}", file=sys.stderr)
    if results:
        print(render_table([result.to_json() for result in results]))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
