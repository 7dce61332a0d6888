"""Neo4j pull against a real Neo4j server (Community, from Maven Central; see
scripts/neo4j-local.sh): keyset pages over ties, later changes picked up, a restart that
continues from the saved cursor, errors classified, and nodes in the raw topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import neo4j
import orjson
import pytest

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.topics import TopicNames
from sources.base import Page
from sources.neo4j import Neo4jSource, Neo4jSourceSettings
from sources.runner import run_sources
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0)


class Graph:
    """Nodes of one label made for one test, deleted after it."""

    def __init__(self, url: str) -> None:
        self.driver = neo4j.GraphDatabase.driver(url, auth=None)
        self.label = f"Product{uuid.uuid4().hex[:8]}"

    def run(self, cypher: str, **params: Any) -> None:
        self.driver.execute_query(cypher.replace("LABEL", f"`{self.label}`"), params)

    def add(self, id_: int, title: str, at: datetime) -> None:
        self.run(
            "CREATE (:LABEL {id: $id, title: $title, updated_at: $at})", id=id_, title=title, at=at
        )

    def close(self) -> None:
        self.run("MATCH (n:LABEL) DETACH DELETE n")
        self.driver.close()


@pytest.fixture
def graph(neo4j_url: str) -> Iterator[Graph]:
    made = Graph(neo4j_url)
    for id_, title, minutes in ((1, "Lamp", 0), (2, "Desk", 1), (3, "Chair", 1), (4, "Stool", 1)):
        made.add(id_, title, T0 + timedelta(minutes=minutes))
    made.url = neo4j_url  # type: ignore[attr-defined]
    yield made
    made.close()


def _source(graph: Graph, url: str, name: str = "graph", **options: Any) -> Neo4jSource:
    fields: dict[str, Any] = {
        "name": name,
        "vertical": "shop",
        "type": "product",
        "url": url,
        "label": graph.label,
        "cursor_property": "updated_at",
        "key_property": "id",
        "name_field": "title",
        "batch_size": 2,
    }
    return Neo4jSource(Neo4jSourceSettings.model_validate(fields | options), TopicNames("x"))


def _drain(source: Neo4jSource, cursor: Any) -> tuple[list[Page], Any]:
    pages = list(source.poll(cursor))
    return pages, pages[-1].cursor if pages else cursor


def _ids(pages: list[Page]) -> list[str]:
    return [record["source_id"] for page in pages for record in page.records]


def test_keyset_pages_ties_changes_and_restart(graph: Graph, neo4j_url: str) -> None:
    source = _source(graph, neo4j_url)
    try:
        pages, cursor = _drain(source, None)
        assert _ids(pages) == ["1", "2", "3", "4"]  # the tie (2, 3, 4) spans pages
        assert pages[0].records[0]["updated_at"] == "2026-03-01T12:00:00"
        assert orjson.loads(orjson.dumps(cursor)) == cursor
        assert _drain(source, cursor)[0] == []

        graph.run(
            "MATCH (n:LABEL {id: 2}) SET n.title = 'Desk v2', n.updated_at = $at",
            at=T0 + timedelta(minutes=5),
        )
        graph.add(5, "Shelf", T0 + timedelta(minutes=1))  # ties the cursor, larger key
        pages, cursor = _drain(source, cursor)
        assert _ids(pages) == ["5", "2"]
        assert pages[-1].records[-1]["title"] == "Desk v2"
    finally:
        source.close()

    restarted = _source(graph, neo4j_url)
    try:
        assert _drain(restarted, cursor)[0] == []
    finally:
        restarted.close()


def test_errors_are_classified(graph: Graph, neo4j_url: str) -> None:
    bad = _source(graph, neo4j_url, database="no-such-database")
    with pytest.raises(FatalError):
        bad._fetch(None)
    bad.close()
    down = _source(graph, "bolt://127.0.0.1:1")
    with pytest.raises(RetriableError):
        down._fetch(None)


def test_nodes_land_in_the_raw_topic_and_a_restart_continues(
    graph: Graph, neo4j_url: str, kafka: KafkaSettings, tmp_path: Path
) -> None:
    core = CoreSettings(data_dir=tmp_path, log_level="WARNING")
    name = f"graph-{uuid.uuid4().hex[:8]}"

    def run_once() -> None:
        settings = _source(graph, neo4j_url, name=name).settings
        run_sources([Neo4jSource(settings, kafka.topics, once=True)], kafka, core)

    run_once()
    first = consume(kafka, kafka.topics.raw, expected=4, timeout=60, settle=0.5)
    assert sorted(m.key for m in first) == [f"shop/product/{i}".encode() for i in range(1, 5)]
    assert {m.headers["qanat.source"] for m in first} == {"neo4j"}
    assert orjson.loads(first[0].value or b"{}")["name"] in {"Lamp", "Desk", "Chair", "Stool"}

    graph.add(6, "Crate", T0 + timedelta(minutes=8))
    run_once()  # a new process: the cursor comes from the saved state
    both = consume(kafka, kafka.topics.raw, expected=5, timeout=60, settle=1.0)
    assert sorted(m.key for m in both)[-1] == b"shop/product/6"
    assert len(both) == 5
