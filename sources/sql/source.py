"""SQL database pull: PostgreSQL and MySQL/MariaDB tables, incrementally, by keyset pages.

Each poll reads the rows changed since the saved cursor, ordered by a cursor column
(``updated_at``, or an ever-growing ``id``) and a unique key column that breaks ties::

    SELECT ... FROM "t" WHERE ("updated_at", "id") > (%s, %s)
    ORDER BY "updated_at", "id" LIMIT %s

so rows that share a cursor value are neither skipped nor read twice, however the pages
fall. Identifiers are quoted by the dialect (:mod:`sources.sql.dialects`), values are query
parameters. The cursor (the last row's two values) is saved after every page once Kafka
acknowledged it, so a restart continues after the last page. The cursor column must be
NOT NULL, and set by the writer when a row changes (a row whose cursor value goes down
is not seen again).

A row becomes a record as it is: columns are fields. ``source_id`` comes from
``source_id_field`` when set, else the key column; ``name_field`` names the column that
becomes ``name``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from pipelines.core.errors import ConfigError
from pipelines.core.topics import TopicNames
from sources.base import Page, PullSource, PullSourceSettings
from sources.cursor import decode_cursor_value, encode_cursor_value
from sources.pull_settings import NonBlankStr
from sources.sql.dialects import MysqlDialect, PostgresDialect, dialect_for

logger = logging.getLogger(__name__)


class SqlSourceSettings(PullSourceSettings):
    """A table (or view) of PostgreSQL or MySQL/MariaDB, pulled by a cursor column."""

    kind: Literal["sql"] = Field("sql", description="sql")
    dsn: SecretStr = Field(
        description="Database URL: postgresql://user:password@host:5432/db or "
        "mysql://user:password@host:3306/db (also mariadb://); in YAML best as ${ENV_VAR}.",
        examples=["postgresql://reader:${PG_PASSWORD}@db:5432/shop"],
    )
    table: NonBlankStr = Field(
        description="The table or view, optionally schema-qualified (schema.table).",
        examples=["products", "inventory.products"],
    )
    cursor_column: NonBlankStr = Field(
        description="NOT NULL column that grows when a row changes: updated_at, or id.",
        examples=["updated_at", "id"],
    )
    key_column: NonBlankStr = Field(
        description="Unique column that orders rows sharing a cursor value (and is the "
        "default source_id).",
        examples=["id"],
    )
    columns: list[str] | None = Field(
        None, description="Columns to read (default: all); the cursor and key are added."
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Rows per page (query).")
    connect_timeout_s: float = Field(10.0, gt=0, description="Seconds to connect, at most.")

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        try:
            dialect_for(value.get_secret_value())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


def _plain(value: Any) -> Any:
    """Values orjson cannot write (MySQL's TIME is a timedelta) as text."""
    return str(value) if isinstance(value, timedelta) else value


class SqlSource(PullSource[SqlSourceSettings]):
    """Pulls a table's new and changed rows into the raw topic, one record per row.

    >>> settings = SqlSourceSettings(
    ...     name="pg-products", vertical="shop", type="product",
    ...     dsn="postgresql://qanat:qanat@127.0.0.1:5432/qanat_test",
    ...     table="public.products", cursor_column="updated_at", key_column="id")
    >>> print(SqlSource(settings, TopicNames("qanat")).query(after=True))
    SELECT * FROM "public"."products" WHERE ("updated_at", "id") > (%s, %s) \
ORDER BY "updated_at", "id" LIMIT %s

    In ``qanat collect``'s YAML: ``kind: sql`` with the fields of
    :class:`SqlSourceSettings`; or ``run_sources([SqlSource(settings, kafka.topics)], ...)``.
    """

    kind: ClassVar[str] = "sql"
    settings_model = SqlSourceSettings

    def __init__(self, settings: SqlSourceSettings, topics: TopicNames, once: bool = False) -> None:
        super().__init__(settings, topics, once)
        self.dialect: PostgresDialect | MysqlDialect = dialect_for(settings.dsn.get_secret_value())
        self._connection: Any = None

    def open(self) -> None:
        """Connections are made on the first query (and again after a failure)."""

    def close(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already broken: nothing to release
                logger.debug("closing a broken connection", exc_info=True)
            self._connection = None

    def query(self, after: bool) -> str:
        """The keyset query, first page (``after=False``) or after a cursor."""
        s, quote = self.settings, self.dialect.quote
        cursor, key = quote([s.cursor_column]), quote([s.key_column])
        order = cursor if s.cursor_column == s.key_column else f"{cursor}, {key}"
        if s.columns:
            wanted = [*s.columns, s.cursor_column, s.key_column]
            selected = ", ".join(quote([c]) for c in dict.fromkeys(wanted))
        else:
            selected = "*"
        table = quote(s.table.split("."))
        where = ""
        if after:
            where = f" WHERE {cursor} > %s" if cursor == order else f" WHERE ({order}) > (%s, %s)"
        return f"SELECT {selected} FROM {table}{where} ORDER BY {order} LIMIT %s"

    def _fetch(self, position: list[Any] | None) -> list[dict[str, Any]]:
        s = self.settings
        params: list[Any] = []
        if position is not None:
            params = [decode_cursor_value(position[0])]
            if s.cursor_column != s.key_column:
                params.append(decode_cursor_value(position[1]))
        params.append(s.batch_size)
        try:
            if self._connection is None:
                self._connection = self.dialect.connect(
                    s.dsn.get_secret_value(), s.connect_timeout_s
                )
            return self.dialect.fetch(self._connection, self.query(position is not None), params)
        except Exception as exc:
            if not self.dialect.is_error(exc):
                raise
            self._disconnect()
            raise self.dialect.classify(exc) from exc

    def _record(self, row: dict[str, Any]) -> dict[str, Any]:
        record = {column: _plain(value) for column, value in row.items()}
        if self.settings.source_id_field is None and record.get("source_id") is None:
            record["source_id"] = str(row[self.settings.key_column])
        return record

    def _position(self, row: dict[str, Any]) -> list[Any]:
        s = self.settings
        missing = [c for c in (s.cursor_column, s.key_column) if c not in row]
        if missing:
            raise ConfigError(f"source {s.name}: the query returned no column {missing[0]!r}")
        return [encode_cursor_value(row[s.cursor_column]), encode_cursor_value(row[s.key_column])]

    def poll(self, cursor: Any) -> Iterator[Page]:
        position: list[Any] | None = cursor
        while not self.stopping:
            rows = self.retrying(partial(self._fetch, position), f"{self.settings.table} query")
            if not rows:
                return
            position = self._position(rows[-1])
            yield Page([self._record(row) for row in rows], position)
            if len(rows) < self.settings.batch_size:
                return


__all__ = ["SqlSource", "SqlSourceSettings"]
