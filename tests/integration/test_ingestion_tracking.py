"""Ingestion tracking and the reader API through the running services: ``source http``,
``transform``, ``sink sqlite`` and ``sink errors`` as child processes on the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pipelines.devbroker import free_port
from tests.services import Services

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "required": ["price"],
    "properties": {"price": {"type": "number", "minimum": 0}},
}
VALID = [{"name": f"Lamp {n}", "source_id": f"p{n}", "price": n} for n in range(5)]
INVALID = [{"name": "Negative", "source_id": "n1", "price": -1}, {"name": "No price"}]


def _wait_for(
    what: str, check: Callable[[], Any], services: Services, timeout: float = 90.0
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        services.check_alive()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{services.log_tails()}")


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_ingestion_status_errors_and_reader_through_services(
    store: str,
    services: Services,
    kafka_bootstrap: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    schema_dir = tmp_path / "schemas" / "shop"
    schema_dir.mkdir(parents=True)
    (schema_dir / "product.json").write_bytes(orjson.dumps(SCHEMA))
    port = free_port()
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "QANAT_KAFKA_TOPIC_PREFIX": f"trk{uuid.uuid4().hex[:10]}",
            "QANAT_KAFKA_PARTITIONS": "2",
            "QANAT_HTTP_PORT": str(port),
            "QANAT_HTTP_AUTH": "none",
            "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "schemas"),
            "QANAT_SQLITE_PATH": str(tmp_path / "qanat.db"),
            "QANAT_HTTP_READ_STORE": store,
            "QANAT_OPS_PORT": "0",  # four services (and other tests): no fixed ops port
        }
    )
    suffix = uuid.uuid4().hex[:10]
    if store == "postgres":
        services.env.update(
            {
                "QANAT_POSTGRES_DSN": request.getfixturevalue("postgres_dsn"),
                "QANAT_POSTGRES_TABLE": f"records_{suffix}",
                "QANAT_ERRORS_TABLE": f"errors_{suffix}",
                "QANAT_ERRORS_INGESTIONS_TABLE": f"ingestions_{suffix}",
            }
        )
    services.start("source-http", "source", "http")
    services.start("transform", "transform")
    services.start(f"sink-{store}", "sink", store)
    services.start("sink-errors", "sink", "errors", store)
    base = f"http://127.0.0.1:{port}/api/v1"
    services.wait_http(f"http://127.0.0.1:{port}/healthz")

    unknown = httpx.get(f"{base}/ingestions/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ingestion_not_found"

    posted = httpx.post(f"{base}/ingest/shop/product/batch", json={"records": VALID + INVALID})
    assert posted.status_code == 202, posted.text
    ingestion_id = posted.json()["ingestion_id"]

    def settled() -> dict[str, Any] | None:
        answer = httpx.get(f"{base}/ingestions/{ingestion_id}")
        if answer.status_code != 200:
            return None
        body: dict[str, Any] = answer.json()
        return body if body["status"] == "complete" else None

    status = _wait_for("the ingestion to be complete", settled, services)
    assert status["ingestion_id"] == ingestion_id
    assert (status["accepted"], status["valid"]) == (len(VALID) + len(INVALID), len(VALID))
    assert (status["stored"], status["invalid"]) == (len(VALID), len(INVALID))
    assert status["invalid_by_stage"] == {"validate": 2}

    errors = httpx.get(f"{base}/ingestions/{ingestion_id}/errors", params={"limit": 1}).json()
    assert len(errors["items"]) == 1 and errors["next_cursor"]
    more = httpx.get(
        f"{base}/ingestions/{ingestion_id}/errors", params={"cursor": errors["next_cursor"]}
    ).json()
    items = errors["items"] + more["items"]
    assert more["next_cursor"] is None and len(items) == len(INVALID)
    by_payload = {item["payload"]: item for item in items}
    assert set(by_payload) == {orjson.dumps(record).decode() for record in INVALID}
    negative = by_payload[orjson.dumps(INVALID[0]).decode()]
    assert (negative["stage"], negative["details"][0]["path"]) == ("validate", "$.price")
    assert negative["reason"]

    page = httpx.get(f"{base}/records/shop/product", params={"limit": 3}).json()
    assert [item["source_id"] for item in page["items"]] == ["p0", "p1", "p2"]
    rest = httpx.get(f"{base}/records/shop/product", params={"cursor": page["next_cursor"]})
    assert [item["source_id"] for item in rest.json()["items"]] == ["p3", "p4"]
    one = httpx.get(f"{base}/records/shop/product/p3").json()
    assert (one["name"], one["vertical_data"], one["ingestion_id"]) == (
        "Lamp 3",
        {"price": 3},
        ingestion_id,
    )
    assert httpx.get(f"{base}/records/shop/product/zz").status_code == 404

    # An NDJSON stream is tracked too: its summary counts the accepted lines.
    lines = (
        b'{"name": "s1", "source_id": "s1", "price": 1}\nnot json\n{"name": "s2", "price": -5}\n'
    )
    streamed = httpx.post(
        f"{base}/ingest/shop/product/stream",
        content=lines,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert streamed.status_code == 202, streamed.text
    stream_id = streamed.json()["ingestion_id"]

    def stream_done() -> dict[str, Any] | None:
        answer = httpx.get(f"{base}/ingestions/{stream_id}")
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body["status"] == "complete" else None

    done = _wait_for("the stream to be complete", stream_done, services)
    assert (done["accepted"], done["stored"], done["invalid"]) == (2, 1, 1)

    # One key twice in a batch, then a later ingestion updating its keys: both complete.
    twice = [
        {"name": "D1", "source_id": "d1", "price": 1},
        {"name": "D1 again", "source_id": "d1", "price": 2},
        {"name": "D2", "source_id": "d2", "price": 3},
    ]
    first = _ingest(base, twice)
    status = _wait_for("a key twice to be complete", _complete(base, first), services)
    assert (status["accepted"], status["stored"], status["handled"]) == (3, 2, 3)
    updates = [{"name": f"{n} updated", "source_id": n, "price": 9} for n in ("d1", "d2", "p0")]
    second = _ingest(base, updates)
    status = _wait_for("the updates to be complete", _complete(base, second), services)
    assert (status["accepted"], status["stored"], status["handled"]) == (3, 3, 3)
    for earlier, counts in ((first, (3, 0, 3)), (ingestion_id, (7, 4, 5))):
        status = httpx.get(f"{base}/ingestions/{earlier}").json()
        assert status["status"] == "complete", status  # not back to processing
        assert (status["accepted"], status["stored"], status["handled"]) == counts
    services.check_alive()


def _ingest(base: str, records: list[dict[str, Any]]) -> str:
    posted = httpx.post(f"{base}/ingest/shop/product/batch", json={"records": records})
    assert posted.status_code == 202, posted.text
    return str(posted.json()["ingestion_id"])


def _complete(base: str, ingestion_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        answer = httpx.get(f"{base}/ingestions/{ingestion_id}")
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body["status"] == "complete" else None

    return check
