"""Neo4j pull: the nodes of one label, incrementally, by keyset pages over Bolt.

Like :mod:`sources.sql.source`: each poll reads the nodes whose cursor property (``updated_at``,
or an ever-growing ``id``) is past the saved cursor, ordered by it and a unique key
property that breaks ties::

    MATCH (n:`Product`) WHERE n.`updated_at` > $cursor
        OR (n.`updated_at` = $cursor AND n.`id` > $key)
    RETURN n ORDER BY n.`updated_at`, n.`id` LIMIT $limit

The label and property names are quoted (backticks), values are query parameters. A node
becomes a record of its properties (temporal values as ISO text); ``source_id`` is the key
property unless ``source_id_field`` says otherwise. Nodes without the cursor property are
not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.topics import TopicNames
from sources.base import Page, PullSource, PullSourceSettings
from sources.cursor import decode_cursor_value, encode_cursor_value
from sources.pull_settings import NonBlankStr

logger = logging.getLogger(__name__)


def quote(name: str) -> str:
    """A label or property name as a Cypher identifier.

    >>> quote("Product"), quote("odd`name")
    ('`Product`', '`odd``name`')
    """
    return "`" + name.replace("`", "``") + "`"


class Neo4jSourceSettings(PullSourceSettings):
    """The nodes of one label in Neo4j, pulled by a cursor property."""

    kind: Literal["neo4j"] = Field("neo4j", description="neo4j")
    url: str = Field(
        description="Bolt URL of the server or cluster.",
        examples=["bolt://127.0.0.1:7687", "neo4j://graph.internal:7687"],
    )
    username: str | None = Field(None, description="User name (none: no authentication).")
    password: SecretStr | None = Field(None, description="Password; in YAML best as ${ENV_VAR}.")
    database: str | None = Field(None, description="Database name (default: the server's).")
    label: NonBlankStr = Field(description="Label of the nodes to read.", examples=["Product"])
    cursor_property: NonBlankStr = Field(
        description="Property that grows when a node changes: updated_at, or id.",
        examples=["updated_at"],
    )
    key_property: NonBlankStr = Field(
        description="Unique property that orders nodes sharing a cursor value (and is the "
        "default source_id).",
        examples=["id"],
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Nodes per page (query).")
    connect_timeout_s: float = Field(10.0, gt=0, description="Seconds to connect, at most.")


def _native(value: Any) -> Any:
    """Neo4j's temporal values as Python's (``to_native``); others unchanged."""
    to_native = getattr(value, "to_native", None)
    return to_native() if callable(to_native) else value


def _plain(value: Any) -> Any:
    """A property value orjson can write: temporal values as ISO text."""
    value = _native(value)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class Neo4jSource(PullSource[Neo4jSourceSettings]):
    """Pulls a label's new and changed nodes into the raw topic, one record per node.

    >>> settings = Neo4jSourceSettings(
    ...     name="graph-products", vertical="shop", type="product",
    ...     url="bolt://127.0.0.1:7687", label="Product",
    ...     cursor_property="updated_at", key_property="id")
    >>> print(Neo4jSource(settings, TopicNames("qanat")).query(after=True))
    MATCH (n:`Product`) WHERE n.`updated_at` > $cursor OR (n.`updated_at` = $cursor \
AND n.`id` > $key) RETURN n ORDER BY n.`updated_at`, n.`id` LIMIT $limit

    In ``qanat collect``'s YAML: ``kind: neo4j`` with the fields of
    :class:`Neo4jSourceSettings`.
    """

    kind: ClassVar[str] = "neo4j"
    settings_model = Neo4jSourceSettings

    def __init__(
        self, settings: Neo4jSourceSettings, topics: TopicNames, once: bool = False
    ) -> None:
        super().__init__(settings, topics, once)
        self._driver: Any = None

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def query(self, after: bool) -> str:
        s = self.settings
        cursor, key = f"n.{quote(s.cursor_property)}", f"n.{quote(s.key_property)}"
        same = s.cursor_property == s.key_property
        order = cursor if same else f"{cursor}, {key}"
        if not after:
            where = f"{cursor} IS NOT NULL"
        elif same:
            where = f"{cursor} > $cursor"
        else:
            where = f"{cursor} > $cursor OR ({cursor} = $cursor AND {key} > $key)"
        return f"MATCH (n:{quote(s.label)}) WHERE {where} RETURN n ORDER BY {order} LIMIT $limit"

    def _connect(self) -> Any:
        import neo4j

        s = self.settings
        auth = None
        if s.username is not None:
            password = s.password.get_secret_value() if s.password else ""
            auth = neo4j.basic_auth(s.username, password)
        # No retries inside the driver: the source's retry policy decides (and reports).
        return neo4j.GraphDatabase.driver(
            s.url,
            auth=auth,
            max_transaction_retry_time=0,
            connection_timeout=s.connect_timeout_s,
            connection_acquisition_timeout=s.connect_timeout_s,
        )

    def _fetch(self, position: list[Any] | None) -> list[dict[str, Any]]:
        import neo4j.exceptions as errors

        s = self.settings
        params: dict[str, Any] = {"limit": s.batch_size}
        if position is not None:
            params["cursor"] = decode_cursor_value(position[0])
            params["key"] = decode_cursor_value(position[1])
        try:
            if self._driver is None:
                self._driver = self._connect()
            records, _, _ = self._driver.execute_query(
                self.query(position is not None),
                params,
                database_=s.database,
                routing_=neo4j_read(),
            )
        except (errors.ServiceUnavailable, errors.SessionExpired, errors.TransientError) as exc:
            self.close()
            raise RetriableError(f"Neo4j unavailable: {exc}", 5.0) from exc
        except errors.Neo4jError as exc:  # client errors: syntax, auth, unknown database
            raise FatalError(f"Neo4j error {exc.code}: {exc.message}") from exc
        except errors.DriverError as exc:
            self.close()
            raise RetriableError(f"Neo4j driver: {exc}", 5.0) from exc
        return [dict(record["n"]) for record in records]

    def _record(self, node: dict[str, Any]) -> dict[str, Any]:
        record = {name: _plain(value) for name, value in node.items()}
        if self.settings.source_id_field is None and record.get("source_id") is None:
            record["source_id"] = str(record[self.settings.key_property])
        return record

    def poll(self, cursor: Any) -> Iterator[Page]:
        s = self.settings
        position: list[Any] | None = cursor
        while not self.stopping:
            nodes = self.retrying(partial(self._fetch, position), f"{s.label} query")
            if not nodes:
                return
            last = nodes[-1]
            position = [
                encode_cursor_value(_native(last[s.cursor_property])),
                encode_cursor_value(_native(last[s.key_property])),
            ]
            yield Page([self._record(node) for node in nodes], position)
            if len(nodes) < s.batch_size:
                return


def neo4j_read() -> Any:
    """Route the queries to a reader (a cluster's follower), as they only read."""
    import neo4j

    return neo4j.RoutingControl.READ
