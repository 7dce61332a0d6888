"""The HTTP ingest benchmarks' service: the real ingest API in a child process.

``sources.http.app.create_app(kafka, HttpSourceSettings(auth="none"))`` under uvicorn (one
process, its default event loop and HTTP parser: uvloop and httptools when installed, as
``qanat source http`` runs it), started as ``python -m benchmarks.http_ingest_service
serve ...`` on a free loopback port against the run's broker; and how to read its RSS and
CPU time from ``/proc``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from benchmarks.common import ROOT, BenchContext
from pipelines.core.config import KafkaSettings
from pipelines.core.topics import ensure_topics
from pipelines.devbroker import free_port

VERTICAL, TYPE = "shop", "product"
SEED = 20260202
START_TIMEOUT_S = 60.0


def serve_main(argv: Sequence[str]) -> None:
    """``python -m benchmarks.http_ingest_service serve --bootstrap B --prefix P --port N``."""
    import uvicorn

    from pipelines.core.ops import freeze_startup_heap
    from sources.http.app import create_app
    from sources.http.settings import HttpSourceSettings

    parser = argparse.ArgumentParser(prog="benchmarks.http_ingest_service serve")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    kafka = KafkaSettings(
        bootstrap_servers=args.bootstrap, topic_prefix=args.prefix, partitions=args.partitions
    )
    app = create_app(kafka, HttpSourceSettings(auth="none"))
    freeze_startup_heap()  # as `qanat source http` does
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


@contextmanager
def service(kafka: KafkaSettings) -> Iterator[Service]:
    """The HTTP source in a child process, ready (``/healthz`` answers); stopped after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    command = [
        sys.executable,
        "-m",
        "benchmarks.http_ingest_service",
        "serve",
        "--bootstrap",
        kafka.bootstrap_servers,
        "--prefix",
        kafka.topic_prefix,
        "--partitions",
        str(kafka.partitions),
        "--port",
        str(port),
    ]
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the HTTP service exited with {child.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP service did not start")
            time.sleep(0.1)
        yield Service(url, child.pid)
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def bench_kafka(ctx: BenchContext) -> KafkaSettings:
    kafka = KafkaSettings(
        bootstrap_servers=ctx.bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:10]}"
    )
    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    return kafka


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:  # noqa: PTH123
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # noqa: PTH123
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m benchmarks.http_ingest_service serve --bootstrap B ...")
    serve_main(sys.argv[2:])
