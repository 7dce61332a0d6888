"""SQL database pull against the real PostgreSQL and MariaDB servers: keyset pages that
handle ties on the cursor column, updates after the cursor picked up, errors classified,
and (with the real broker) rows in the raw topic and a restart that continues."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pydantic import SecretStr

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.topics import TopicNames
from sources.base import Page
from sources.runner import run_sources
from sources.sql.dialects import MysqlDialect
from sources.sql.source import SqlSource, SqlSourceSettings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0)
# Rows 2, 3 and 4 share one updated_at: with 2 rows per page the tie spans pages.
ROWS = [
    (1, "Lamp", "9.50", T0),
    (2, "Desk", "120.00", T0 + timedelta(minutes=1)),
    (3, "Chair", "55.00", T0 + timedelta(minutes=1)),
    (4, "Stool", "20.00", T0 + timedelta(minutes=1)),
    (5, "Shelf", "80.00", T0 + timedelta(minutes=2)),
]


class Database:
    """One table in a real server, made for one test and dropped after it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.mysql = dsn.startswith("mysql")
        self.table = f"products_{uuid.uuid4().hex[:10]}"

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        if self.mysql:
            connection = MysqlDialect().connect(self.dsn, 10)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(statement.replace('"', "`"), params)
            finally:
                connection.close()
        else:
            with psycopg.connect(self.dsn, autocommit=True) as connection:
                connection.execute(statement.encode(), params)

    def create(self) -> None:
        stamp = "DATETIME(6)" if self.mysql else "TIMESTAMP(6)"
        self.execute(
            f'CREATE TABLE "{self.table}" (id INTEGER PRIMARY KEY, title VARCHAR(100) NOT NULL, '
            f"price NUMERIC(10, 2), updated_at {stamp} NOT NULL)"
        )
        for row in ROWS:
            self.insert(*row)

    def insert(self, id_: int, title: str, price: str, at: datetime) -> None:
        self.execute(f'INSERT INTO "{self.table}" VALUES (%s, %s, %s, %s)', (id_, title, price, at))

    def drop(self) -> None:
        self.execute(f'DROP TABLE IF EXISTS "{self.table}"')


@pytest.fixture(params=["postgres", "mysql"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    dsn = request.getfixturevalue("postgres_dsn" if request.param == "postgres" else "mysql_dsn")
    db = Database(dsn)
    db.create()
    yield db
    db.drop()


def _source(db: Database, name: str = "products", **options: Any) -> SqlSource:
    fields: dict[str, Any] = {
        "name": name,
        "vertical": "shop",
        "type": "product",
        "dsn": db.dsn,
        "table": db.table,
        "cursor_column": "updated_at",
        "key_column": "id",
        "name_field": "title",
    }
    settings = SqlSourceSettings.model_validate(fields | options)
    return SqlSource(settings, TopicNames("unused"))


def _drain(source: SqlSource, cursor: Any) -> tuple[list[Page], Any]:
    pages = list(source.poll(cursor))
    return pages, pages[-1].cursor if pages else cursor


def _ids(pages: list[Page]) -> list[str]:
    return [record["source_id"] for page in pages for record in page.records]


def test_keyset_pages_cover_ties_and_pick_up_later_changes(database: Database) -> None:
    source = _source(database, batch_size=2)
    try:
        pages, cursor = _drain(source, None)
        assert [len(page.records) for page in pages] == [2, 2, 1]
        assert _ids(pages) == ["1", "2", "3", "4", "5"]  # the tie (2, 3, 4) across pages
        first = pages[0].records[0]
        assert first["title"] == "Lamp" and str(first["price"]) in ("9.50", "9.5")
        assert orjson.loads(orjson.dumps(cursor)) == cursor  # the checkpoint is JSON

        assert _drain(source, cursor)[0] == []  # nothing new

        # An update after the cursor, a new row sharing the last cursor value, a new row.
        later = T0 + timedelta(minutes=5)
        database.execute(
            f'UPDATE "{database.table}" SET title = %s, updated_at = %s WHERE id = 2',
            ("Desk v2", later),
        )
        database.insert(6, "Bench", "15.00", T0 + timedelta(minutes=2))
        database.insert(7, "Rack", "33.00", later)
        pages, cursor = _drain(source, cursor)
        assert _ids(pages) == ["6", "2", "7"]
        assert pages[0].records[0]["title"] == "Bench"
        assert pages[0].records[1]["title"] == "Desk v2"
    finally:
        source.close()

    # A new source object (a restart) given the saved cursor goes on from there.
    restarted = _source(database, batch_size=2)
    try:
        assert _drain(restarted, cursor)[0] == []
        database.insert(8, "Crate", "5.00", T0 + timedelta(minutes=9))
        assert _ids(_drain(restarted, cursor)[0]) == ["8"]
    finally:
        restarted.close()


def test_columns_and_a_cursor_on_the_key_alone(database: Database) -> None:
    source = _source(database, columns=["title"], cursor_column="id", batch_size=3)
    try:
        pages, cursor = _drain(source, None)
        assert _ids(pages) == ["1", "2", "3", "4", "5"]
        assert set(pages[0].records[0]) == {"title", "id", "source_id"}
        assert cursor == [5, 5]
    finally:
        source.close()


def test_errors_are_classified(database: Database) -> None:
    missing = _source(database, table=f"{database.table}_missing")
    with pytest.raises(FatalError):
        missing._fetch(None)
    scheme = "mysql" if database.mysql else "postgresql"
    closed_port = SecretStr(f"{scheme}://u:p@127.0.0.1:1/db")
    unreachable = SqlSource(
        missing.settings.model_copy(update={"dsn": closed_port}), TopicNames("unused")
    )
    with pytest.raises(RetriableError):
        unreachable._fetch(None)


# The dialects are covered above; this checks the SDK around them once (it is slow:
# two runs of a Quix application).
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_rows_land_in_the_raw_topic_and_a_restart_continues(
    database: Database, kafka: KafkaSettings, tmp_path: Path
) -> None:
    core = CoreSettings(data_dir=tmp_path, log_level="WARNING")
    name = f"sql-{uuid.uuid4().hex[:8]}"

    def run_once() -> None:
        source = _source(database, name=name, batch_size=2)
        run_sources([SqlSource(source.settings, kafka.topics, once=True)], kafka, core)

    run_once()
    first = consume(kafka, kafka.topics.raw, expected=len(ROWS), timeout=60, settle=0.5)
    assert sorted(m.key for m in first) == [f"shop/product/{i}".encode() for i in range(1, 6)]
    assert {m.headers["qanat.source"] for m in first} == {"sql"}
    assert len({m.headers["qanat.ingestion_id"] for m in first}) == 1  # one per poll
    record = orjson.loads(first[0].value or b"{}")
    assert record["source_id"] == first[0].key.decode().rsplit("/", 1)[1]  # type: ignore[union-attr]
    assert record["name"] == record["title"]

    database.execute(
        f'UPDATE "{database.table}" SET price = %s, updated_at = %s WHERE id = 3',
        ("60.00", T0 + timedelta(minutes=7)),
    )
    run_once()  # a new process: the cursor comes from the saved state
    both = consume(kafka, kafka.topics.raw, expected=len(ROWS) + 1, timeout=60, settle=1.0)
    assert len(both) == len(ROWS) + 1  # only the updated row was produced again
    prices = [
        float(orjson.loads(m.value or b"{}")["price"]) for m in both if m.key == b"shop/product/3"
    ]
    assert sorted(prices) == [55.0, 60.0]
