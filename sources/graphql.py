"""The GraphQL polling collector: one query, paged by ``pageInfo { endCursor hasNextPage }``.

The query takes the page cursor as a variable (``after`` by default) and, for an
incremental poll, the largest value of a field seen before (``updatedSince``). The
position inside a poll is saved after every page, so a restart goes on from the next page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipelines.core.errors import FatalError
from sources.base import Page, get_path
from sources.rest import HttpPullSettings, HttpPullSource, Incremental, json_body, records_at

logger = logging.getLogger(__name__)


class GraphQLSettings(HttpPullSettings):
    """A GraphQL API polled by ``qanat collect`` (kind: graphql)."""

    kind: Literal["graphql"] = Field("graphql", description="The connector: graphql.")
    url: str = Field(description="The GraphQL endpoint (POST).")
    query: str = Field(
        description="The query; it declares the cursor variable (and the incremental one).",
        examples=[
            "query($after: String, $since: String) { products(first: 100, after: $after, "
            "updatedSince: $since) { nodes { id name updatedAt } "
            "pageInfo { endCursor hasNextPage } } }"
        ],
    )
    variables: dict[str, Any] = Field(
        default_factory=dict, description="Variables sent with every request."
    )
    nodes_path: str = Field(
        description="Dotted path of the records array in the response.",
        examples=["data.products.nodes"],
    )
    page_info_path: str | None = Field(
        None,
        description="Dotted path of the pageInfo object (endCursor, hasNextPage); none: "
        "one request per poll.",
        examples=["data.products.pageInfo"],
    )
    cursor_variable: str = Field("after", description="The variable that takes endCursor.")
    incremental: Incremental | None = Field(
        None,
        description="Fetch only records changed since the largest value seen (param is the "
        "variable's name).",
    )


class GraphQLSource(HttpPullSource[GraphQLSettings]):
    """Polls a GraphQL API; see :class:`GraphQLSettings`.

    >>> from pipelines.core.topics import TopicNames
    >>> settings = GraphQLSettings(name="shop-gql", vertical="shop", type="product",
    ...     url="http://127.0.0.1:8000/graphql", nodes_path="data.products.nodes",
    ...     page_info_path="data.products.pageInfo", source_id_field="id",
    ...     query="query($after: String) { products(after: $after) { nodes { id } "
    ...           "pageInfo { endCursor hasNextPage } } }")
    >>> GraphQLSource(settings, TopicNames()).variables({"after": "c2"}, None)
    {'after': 'c2'}
    """

    kind: ClassVar[str] = "graphql"
    settings_model = GraphQLSettings

    def variables(self, state: dict[str, Any], since: Any) -> dict[str, Any]:
        """The request's variables: the configured ones, the page cursor, the since value."""
        variables = dict(self.settings.variables)
        if state.get("after") is not None:
            variables[self.settings.cursor_variable] = state["after"]
        if self.settings.incremental and since is not None:
            variables[self.settings.incremental.param] = since
        return variables

    def poll(self, cursor: Any) -> Iterator[Page]:
        """The cursor: ``since`` (asked from in this poll), ``largest`` (seen so far) and
        ``after`` (endCursor of the last page fetched; None when the poll finished)."""
        state = dict(cursor) if isinstance(cursor, dict) else {}
        incremental = self.settings.incremental
        since = state.get("since", incremental.initial if incremental else None)
        largest = state.get("largest", since)
        while True:
            body = self._query(self.variables(state, since))
            nodes = records_at(body, self.settings.nodes_path)
            if incremental:
                largest = incremental.largest(largest, nodes)
            info = get_path(body, self.settings.page_info_path) or {}
            after = info.get("endCursor") if isinstance(info, dict) else None
            if nodes and after and info.get("hasNextPage"):
                state = {"since": since, "largest": largest, "after": after}
                yield Page(nodes, state)
            else:
                yield Page(nodes, {"since": largest, "largest": largest, "after": None})
                return

    def _query(self, variables: dict[str, Any]) -> Any:
        payload = {"query": self.settings.query, "variables": variables}
        response = self.request("POST", self.settings.url, json=payload)
        body = json_body(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and get_path(body, self.settings.nodes_path) is None:
            raise FatalError(f"{self.settings.url}: the query failed: {errors}"[:1000])
        if errors:
            logger.warning("source %s: partial result with errors: %s", self.name, errors)
        return body
