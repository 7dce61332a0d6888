"""The records reader and ingestion routes of the control router, over SQLite and
PostgreSQL filled by the real sinks; and their auth scopes in the HTTP source's app."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql

from pipelines.control.app import control_router
from pipelines.core.config import KafkaSettings
from pipelines.core.records import now
from pipelines.transform.registry import SchemaRegistry
from sinks.errors import ErrorsSinkSettings
from sinks.postgres.errors import PostgresErrorsSink, PostgresErrorStore
from sinks.postgres.ingestions import PostgresIngestionLedger, PostgresIngestionsSink
from sinks.postgres.reader import PostgresRecordReader
from sinks.postgres.settings import PostgresSinkSettings
from sinks.postgres.sink import PostgresSink
from sinks.progress import progress_table
from sinks.sqlite.errors import SQLiteErrorsSink, SQLiteErrorStore
from sinks.sqlite.ingestions import SQLiteIngestionLedger, SQLiteIngestionsSink
from sinks.sqlite.reader import SQLiteRecordReader
from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings

pytestmark = pytest.mark.integration

URL = "/api/v1/records/shop/product"
FIELDS = {
    "vertical",
    "type",
    "source_id",
    "name",
    "vertical_data",
    "source",
    "ingestion_id",
    "event_time",
    "updated_at",
    "schema_version",
}


def _record(source_id: str, ingestion_id: str, type_: str = "product") -> dict[str, Any]:
    return {
        "vertical": "shop",
        "type": type_,
        "source_id": source_id,
        "name": f"Item {source_id}",
        "vertical_data": {"price": 1, "id": source_id},
        "source": "http",
        "ingestion_id": ingestion_id,
        "event_time": "2026-01-01T00:00:00.000000Z",
        "schema_version": 2,
    }


def _dead_letter(ingestion_id: str, n: int) -> list[tuple[str, bytes]]:
    details = [{"path": f"$.items[{n}].price", "message": "not a number"}]
    return [
        ("qanat.ingestion_id", ingestion_id.encode()),
        ("qanat.event_id", f"ev-{n}".encode()),
        ("qanat.vertical", b"shop"),
        ("qanat.type", b"product"),
        ("qanat.error.stage", b"validate"),
        ("qanat.error.reason", b"price is not a number"),
        ("qanat.error.details", orjson.dumps(details)),
        ("qanat.error.at", f"2026-01-01T00:00:0{n}.000000Z".encode()),
    ]


class Stores:
    """Writes records and dead letters with the real sinks; hands out the readers."""

    def __init__(self, sinks: tuple[Any, Any, Any], readers: tuple[Any, Any, Any]) -> None:
        self.records_sink, self.errors_sink, self.ingestions_sink = sinks
        self.reader, self.errors, self.ledger = readers
        self.offset = 0
        for sink in sinks:
            sink.setup()

    def put(self, *records: dict[str, Any]) -> None:
        for record in records:
            self.offset += 1
            key = f"shop/{record['type']}/{record['source_id']}"
            self.records_sink.add(record, key, 0, [], "qanat.records", 0, self.offset)
        self.records_sink.flush()

    def dead(self, ingestion_id: str, count: int) -> None:
        for n in range(count):
            self.offset += 1
            headers = _dead_letter(ingestion_id, n)
            self.errors_sink.add(b'{"price": "x"}', b"k", 0, headers, "qanat.dlq", 0, self.offset)
        self.errors_sink.flush()

    def accepted(self, ingestion_id: str, count: int) -> None:
        self.offset += 1
        summary = {"ingestion_id": ingestion_id, "accepted": count, "vertical": "shop"}
        self.ingestions_sink.add(summary, ingestion_id, 0, [], "qanat.ingestions", 0, self.offset)
        self.ingestions_sink.flush()

    def close(self) -> None:
        for sink in (self.records_sink, self.errors_sink, self.ingestions_sink):
            sink.close()
        for reader in (self.reader, self.errors, self.ledger):
            reader.close()


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        settings = SQLiteSinkSettings(path=tmp_path / "qanat.db")
        made = Stores(
            (SQLiteSink(settings), SQLiteErrorsSink(settings), SQLiteIngestionsSink(settings)),
            (
                SQLiteRecordReader(settings),
                SQLiteErrorStore(settings),
                SQLiteIngestionLedger(settings),
            ),
        )
        yield made
        made.close()
        return
    dsn = request.getfixturevalue("postgres_dsn")
    suffix = uuid.uuid4().hex[:10]
    pg = PostgresSinkSettings(dsn=dsn, table=f"records_{suffix}")
    errors = ErrorsSinkSettings(table=f"errors_{suffix}", ingestions_table=f"ing_{suffix}")
    made = Stores(
        (PostgresSink(pg), PostgresErrorsSink(pg, errors), PostgresIngestionsSink(pg, errors)),
        (
            PostgresRecordReader(pg),
            PostgresErrorStore(pg, errors),
            PostgresIngestionLedger(pg, errors),
        ),
    )
    yield made
    made.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in (pg.table, progress_table(pg.table), errors.table, errors.ingestions_table):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture
def client(kafka: KafkaSettings, stores: Stores) -> Iterator[TestClient]:
    registry = SchemaRegistry(kafka)
    app = FastAPI()
    app.include_router(
        control_router(
            kafka, registry, records=stores.reader, errors=stores.errors, ledger=stores.ledger
        )
    )
    try:
        with TestClient(app) as client:
            yield client
    finally:
        registry.close()


def test_reader_pages_filters_and_404(client: TestClient, stores: Stores) -> None:
    assert client.get(URL).json() == {"items": [], "next_cursor": None}
    ids = [f"p{n:02d}" for n in range(7)]
    stores.put(*(_record(i, "ing-a") for i in ids), _record("other", "ing-a", "order"))

    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        answer = client.get(URL, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= 3
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [item["source_id"] for item in seen] == ids
    first = seen[0]
    assert set(first) == FIELDS
    assert first["vertical_data"] == {"price": 1, "id": "p00"}
    assert (first["source"], first["ingestion_id"], first["schema_version"]) == ("http", "ing-a", 2)
    assert first["event_time"] == "2026-01-01T00:00:00.000000Z"
    assert first["updated_at"].endswith("Z")

    one = client.get(URL, params={"source_id": "p03"}).json()["items"]
    assert [item["source_id"] for item in one] == ["p03"]

    time.sleep(0.01)
    since = now()
    time.sleep(0.01)
    stores.put(_record("p05", "ing-b"), _record("p99", "ing-b"))
    newer = client.get(URL, params={"updated_since": since}).json()["items"]
    assert [item["source_id"] for item in newer] == ["p05", "p99"]
    assert client.get(URL, params={"updated_since": "2999-01-01T00:00:00Z"}).json()["items"] == []

    got = client.get(f"{URL}/p05")
    assert got.status_code == 200
    assert got.json()["ingestion_id"] == "ing-b"
    missing = client.get(f"{URL}/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "record_not_found"

    for params, code in (
        ({"limit": 0}, "invalid_limit"),
        ({"limit": 1001}, "invalid_limit"),
        ({"limit": "x"}, "invalid_limit"),
        ({"cursor": "!!"}, "invalid_cursor"),
        ({"updated_since": "yesterday"}, "invalid_time"),
    ):
        bad = client.get(URL, params=params)
        assert bad.status_code == 400, params
        assert bad.json()["error"]["code"] == code
    assert client.get("/api/v1/records/Shop/product").status_code == 400


def test_ingestion_status_and_errors(client: TestClient, stores: Stores) -> None:
    assert client.get("/api/v1/ingestions/ing-x").status_code == 404
    missing = client.get("/api/v1/ingestions/ing-x/errors")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ingestion_not_found"

    stores.put(_record("a", "ing-x"), _record("b", "ing-x"))
    stores.dead("ing-x", 3)
    status = client.get("/api/v1/ingestions/ing-x")
    assert status.status_code == 200, status.text
    assert status.json() == {
        "ingestion_id": "ing-x",
        "accepted": None,
        "invalid": 3,
        "valid": None,
        "stored": 2,
        "handled": 2,
        "status": "processing",
        "invalid_by_stage": {"validate": 3},
    }
    first = client.get("/api/v1/ingestions/ing-x/errors", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get(
        "/api/v1/ingestions/ing-x/errors", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert rest["next_cursor"] is None
    items = first["items"] + rest["items"]
    assert [e["details"][0]["path"] for e in items] == [f"$.items[{n}].price" for n in range(3)]
    assert {(e["stage"], e["reason"]) for e in items} == {("validate", "price is not a number")}
    assert items[0]["payload"] == '{"price": "x"}'

    stores.accepted("ing-x", 6)
    status = client.get("/api/v1/ingestions/ing-x").json()
    assert (status["accepted"], status["valid"], status["status"]) == (6, 3, "processing")
    stores.accepted("ing-x", 5)  # a summary is stored once
    stores.accepted("ing-z", 0)  # known from its summary alone: an empty batch
    status = client.get("/api/v1/ingestions/ing-x").json()
    assert (status["accepted"], status["valid"], status["status"]) == (6, 3, "processing")
    stores.put(_record("c", "ing-x"))
    assert client.get("/api/v1/ingestions/ing-x").json()["status"] == "complete"
    empty = client.get("/api/v1/ingestions/ing-z").json()
    assert (empty["accepted"], empty["stored"], empty["status"]) == (0, 0, "complete")
    assert client.get("/api/v1/ingestions/ing-z/errors").json()["items"] == []

    # A later ingestion updating a row takes it away from this one, which stays complete.
    stores.put({**_record("a", "ing-y"), "event_time": "2026-02-01T00:00:00.000000Z"})
    status = client.get("/api/v1/ingestions/ing-x").json()
    assert (status["stored"], status["handled"], status["status"]) == (2, 3, "complete")
    assert client.get("/api/v1/ingestions/ing-y").json()["stored"] == 1


def test_ingestion_complete_with_a_key_twice_and_a_later_update(
    client: TestClient, stores: Stores
) -> None:
    later = "2026-02-01T00:00:00.000000Z"
    # the same key twice in one batch: one row, two records handled
    stores.put(_record("a", "ing-d"), {**_record("a", "ing-d"), "name": "A2"})
    stores.put(_record("b", "ing-d"))
    stores.accepted("ing-d", 3)
    status = client.get("/api/v1/ingestions/ing-d").json()
    assert (status["stored"], status["handled"], status["status"]) == (2, 3, "complete")
    # a later ingestion updates both keys: the first stays complete, with nothing stored
    stores.put({**_record("a", "ing-e"), "event_time": later})
    stores.put({**_record("b", "ing-e"), "event_time": later})
    stores.accepted("ing-e", 2)
    for ingestion_id, expected in (("ing-d", (0, 3, "complete")), ("ing-e", (2, 2, "complete"))):
        status = client.get(f"/api/v1/ingestions/{ingestion_id}").json()
        assert (status["stored"], status["handled"], status["status"]) == expected
        jsonschema.validate(status, _ingestion_schema(client))
    # known from what it handled alone: no summary, no dead letter, no row carries it
    stores.put(_record("c", "ing-f"))
    stores.put({**_record("c", "ing-g"), "event_time": later})
    assert client.get("/api/v1/ingestions/ing-f").json()["handled"] == 1
    assert client.get("/api/v1/ingestions/ing-f/errors").json()["items"] == []


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
def test_read_routes_need_a_read_key_for_the_vertical(
    kafka: KafkaSettings, stores: Stores, tmp_path: Path
) -> None:
    from sources.http.app import create_app
    from sources.http.auth import SQLiteKeyStore, create_key
    from sources.http.settings import HttpSourceSettings

    keys = SQLiteKeyStore(tmp_path / "keys.db")
    _, reader = create_key(keys, "reader", ["read"], ["shop"])
    _, writer = create_key(keys, "writer", ["write"], ["shop"])
    _, elsewhere = create_key(keys, "elsewhere", ["read"], ["news"])
    app = create_app(kafka, HttpSourceSettings(auth="keys"), keys=keys)
    authenticator = app.state.authenticator
    registry = SchemaRegistry(kafka)
    app.include_router(
        control_router(
            kafka,
            registry,
            records=stores.reader,
            errors=stores.errors,
            ledger=stores.ledger,
            read_auth=authenticator.require("read"),
            authorize=authenticator.authorize,
        )
    )
    stores.put(_record("p1", "ing-1"))
    stores.accepted("ing-1", 1)
    stores.put(_record("p2", "ing-2"))  # no summary, no dead letter: its vertical is unknown

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    try:
        with TestClient(app) as client:
            for url in (URL, f"{URL}/p1"):
                assert client.get(url, headers=bearer(reader)).status_code == 200
                assert client.get(url).status_code == 401
                assert client.get(url, headers=bearer("qk_0_nope")).status_code == 401
                for other in (writer, elsewhere):
                    refused = client.get(url, headers=bearer(other))
                    assert refused.status_code == 403
                    assert refused.json()["error"]["code"] == "forbidden"
            for url in ("/api/v1/ingestions/ing-1", "/api/v1/ingestions/ing-1/errors"):
                assert client.get(url).status_code == 401
                assert client.get(url, headers=bearer(reader)).status_code == 200
                for other in (writer, elsewhere):
                    assert client.get(url, headers=bearer(other)).status_code == 403
            ingestion = client.get("/api/v1/ingestions/ing-1", headers=bearer(reader)).json()
            assert (ingestion["accepted"], ingestion["stored"]) == (1, 1)
            unknown = client.get("/api/v1/ingestions/ing-2", headers=bearer(reader))
            assert unknown.status_code == 404
    finally:
        registry.close()


def _ingestion_schema(client: TestClient) -> dict[str, Any]:
    """The 200 answer of GET /ingestions/{id} as the OpenAPI document declares it."""
    operation = client.app.openapi()["paths"]["/api/v1/ingestions/{id}"]["get"]  # type: ignore[attr-defined]
    schema: dict[str, Any] = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert "handled" in schema["required"]
    return schema
