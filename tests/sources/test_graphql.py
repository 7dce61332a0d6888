"""The GraphQL collector against a real local GraphQL endpoint: cursor pagination by
pageInfo, the incremental variable, retries, GraphQL errors (end to end with Kafka: see
test_collect.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.core.errors import FatalError
from pipelines.core.topics import TopicNames
from sources.graphql import GraphQLSettings, GraphQLSource
from tests.sources.pull_routes import serve_graphql
from tests.sources.pull_server import Reply, catalog_of, pull_server

QUERY = """query($first: Int, $after: String, $since: String) {
  products(first: $first, after: $after, updatedSince: $since) {
    nodes { id name updatedAt }
    pageInfo { endCursor hasNextPage }
  }
}"""


def source(url: str, **options: Any) -> GraphQLSource:
    settings = GraphQLSettings(
        name="shop-gql",
        vertical="shop",
        type="product",
        url=url,
        query=options.pop("query", QUERY),
        variables={"first": 10},
        nodes_path="data.products.nodes",
        page_info_path="data.products.pageInfo",
        incremental={"field": "updatedAt", "param": "since"},
        source_id_field="id",
        retry={"attempts": 3, "initial_delay": 0.05},
        **options,
    )
    gql = GraphQLSource(settings, TopicNames("test"))
    gql.open()
    return gql


def test_pages_by_end_cursor_then_asks_only_for_changes() -> None:
    catalog = catalog_of(25)
    with pull_server() as server:
        serve_graphql(server, catalog)
        server.fail_next("/graphql", Reply(502, {"error": "gateway"}))  # retried
        gql = source(f"{server.url}/graphql", auth={"type": "bearer", "token": "t0k"})
        pages = list(gql.poll(None))
        catalog.upsert("p07", "Product 7, renamed")
        again = list(gql.poll(pages[-1].cursor))
    assert [n["id"] for page in pages for n in page.records] == [f"p{n:02d}" for n in range(1, 26)]
    sent = [r.body["variables"] for r in server.requests[1:]]
    assert sent[:3] == [{"first": 10}, {"first": 10, "after": "10"}, {"first": 10, "after": "20"}]
    assert pages[0].cursor["after"] == "10"  # a restart would go on from the second page
    largest = catalog_of(25).products["p25"]["updated_at"]
    assert sent[3] == {"first": 10, "since": largest}
    assert [n["id"] for page in again for n in page.records] == ["p07"]
    assert server.requests[1].headers["authorization"] == "Bearer t0k"


def test_a_failing_query_is_fatal() -> None:
    with pull_server() as server:
        serve_graphql(server, catalog_of(1))
        gql = source(f"{server.url}/graphql", query="{ orders { nodes { id } } }")
        with pytest.raises(FatalError, match="Cannot query field"):
            list(gql.poll(None))
