"""The REST collector end to end on the real broker: records land in the raw topic with
the contract's keys and headers; a poll that failed half way goes on, after a restart,
from the page where it stopped (no page fetched again); the next poll asks only for what
changed (the incremental cursor)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from quixstreams.sources.base.exceptions import SourceException

from pipelines.core.config import CoreSettings, KafkaSettings
from sources.rest import RestSettings, RestSource
from sources.runner import run_sources
from tests.kafka_helpers import consume
from tests.sources.pull_routes import TOKEN, serve_rest
from tests.sources.pull_server import Reply, catalog_of, pull_server


def pages_asked(requests: list[object]) -> list[tuple[str, str | None]]:
    return [(r.query["page"], r.query.get("updated_since")) for r in requests]  # type: ignore[attr-defined]


@pytest.mark.integration
def test_rest_records_land_and_restarts_continue(kafka: KafkaSettings, tmp_path: Path) -> None:
    catalog = catalog_of(25)
    down_pages = {3}
    core = CoreSettings(data_dir=tmp_path)
    with pull_server() as server:
        serve_rest(server, catalog, down_pages=down_pages)
        settings = RestSettings(
            name="shop-api",
            vertical="shop",
            type="product",
            url=f"{server.url}/products",
            auth={"type": "bearer", "token": TOKEN},
            records_path="data.items",
            pagination={"type": "page", "size": 10},
            source_id_field="id",
            name_field="title",
            incremental={"field": "updated_at", "param": "updated_since"},
            retry={"attempts": 3, "initial_delay": 0.05, "max_delay": 0.1},
        )

        def run_once() -> None:
            run_sources([RestSource(settings, kafka.topics, once=True)], kafka, core)

        # 1st run: page 1 answers 429 (Retry-After) then 500, both retried; page 3 stays
        # down, so the poll fails after page 2 was saved.
        server.fail_next("/products", Reply(429, {}, {"Retry-After": "1"}), Reply(500, {}))
        with pytest.raises(SourceException):
            run_once()
        assert pages_asked(server.requests) == [("1", None)] * 3 + [("2", None)] + [("3", None)] * 3
        assert server.requests[1].at - server.requests[0].at >= 1.0
        first = consume(kafka, kafka.topics.raw, expected=20, settle=0.5)
        assert len(first) == 20

        # 2nd run, a new process: goes on at page 3, without asking for pages 1 and 2 again.
        down_pages.clear()
        asked_before = len(server.requests)
        run_once()
        assert pages_asked(server.requests[asked_before:]) == [("3", None)]
        landed = consume(kafka, kafka.topics.raw, expected=25, settle=0.5)
        assert sorted(m.key for m in landed) == [
            f"shop/product/p{n:02d}".encode() for n in range(1, 26)
        ]

        # 3rd run: only what changed since the largest updated_at seen.
        largest = catalog.products["p25"]["updated_at"]
        catalog.upsert("p03", "Product 3, renamed")
        catalog.upsert("p26", "Product 26")
        asked_before = len(server.requests)
        run_once()
        assert pages_asked(server.requests[asked_before:]) == [("1", largest)]
        landed = consume(kafka, kafka.topics.raw, expected=27, settle=1.0)

    assert len(landed) == 27
    renamed = [orjson.loads(m.value or b"") for m in landed if m.key == b"shop/product/p03"]
    assert [r["name"] for r in renamed] == ["Product 3", "Product 3, renamed"]
    assert renamed[0]["source_id"] == "p03" and renamed[0]["title"] == "Product 3"
    headers = landed[0].headers
    assert (headers["qanat.vertical"], headers["qanat.type"], headers["qanat.source"]) == (
        "shop",
        "product",
        "rest",
    )
    assert headers["content-type"] == "application/json" and headers["qanat.event_id"]
    # The poll cut short and its continuation are one ingestion; the 3rd poll is another.
    ingestions = {m.headers["qanat.ingestion_id"] for m in landed}
    assert len(ingestions) == 2
    summaries = consume(kafka, kafka.topics.ingestions, expected=2, settle=0.5)
    assert sorted(orjson.loads(m.value or b"")["accepted"] for m in summaries) == [2, 25]
