"""The complete example of docs/custom-sources.md (examples/feed_source.py), run as its own
process against the real broker: records land with the contract's keys and headers, and a
second run, after a restart, produces only what is new (the cursor was saved)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from tests.kafka_helpers import consume
from tests.sources.pull_server import PullServer, Reply, pull_server

ROOT = Path(__file__).resolve().parents[2]
ITEM = "<item><title>{title}</title><guid>{guid}</guid><pubDate>{date}</pubDate></item>"


def feed(*items: tuple[str, str, str]) -> bytes:
    body = "".join(ITEM.format(title=t, guid=g, date=d) for t, g, d in items)
    return f"<rss version='2.0'><channel>{body}</channel></rss>".encode()


def run_example(kafka: KafkaSettings, url: str, data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")}
    env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_DATA_DIR": str(data_dir),
    }
    command = [sys.executable, "-m", "examples.feed_source", url, "--vertical", "news"]
    command += ["--type", "article", "--name", "blog", "--once"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


@pytest.mark.integration
def test_feed_example_produces_new_items_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    items = [
        ("First", "g-1", "Mon, 02 Mar 2026 10:00:00 GMT"),
        ("Second", "g-2", "Mon, 02 Mar 2026 11:00:00 GMT"),
    ]
    with pull_server() as server:
        serve_feed(server, items)
        run_example(kafka, f"{server.url}/feed.xml", tmp_path)
        first = consume(kafka, kafka.topics.raw, expected=2, settle=0.5)
        assert sorted(m.key for m in first) == [b"news/article/g-1", b"news/article/g-2"]
        headers = first[0].headers
        assert headers["qanat.vertical"] == "news" and headers["qanat.type"] == "article"
        assert headers["qanat.source"] == "feed"
        assert headers["content-type"] == "application/json"
        assert len({m.headers["qanat.ingestion_id"] for m in first}) == 1  # one per poll
        assert orjson.loads(first[0].value or b"{}")["title"] in ("First", "Second")

        items.append(("Third", "g-3", "Mon, 02 Mar 2026 12:00:00 GMT"))
        server.fail_next("/feed.xml", Reply(500, {"error": "busy"}))  # retried
        run_example(kafka, f"{server.url}/feed.xml", tmp_path)
        both = consume(kafka, kafka.topics.raw, expected=3, settle=1.0)
        assert sorted(m.key for m in both) == [
            b"news/article/g-1",
            b"news/article/g-2",
            b"news/article/g-3",
        ]  # g-1 and g-2 were not produced again
        assert len(server.seen("/feed.xml")) == 3

    summaries = consume(kafka, kafka.topics.ingestions, expected=2, settle=0.5)
    accepted = sorted(orjson.loads(m.value or b"{}")["accepted"] for m in summaries)
    assert accepted == [1, 2]
    third = next(m for m in both if m.key == b"news/article/g-3")
    assert third.headers["qanat.ingestion_id"] != headers["qanat.ingestion_id"]


def serve_feed(server: PullServer, items: list[tuple[str, str, str]]) -> None:
    @server.route("GET", "/feed.xml")
    def _feed(_request: object) -> Reply:
        return Reply(200, feed(*items))
