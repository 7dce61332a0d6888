"""The bad-input corpus (tests/data/bad_inputs/ and the generated inputs below) against the
real HTTP source and the real transform, as processes: each input gets a clear 4xx with the
JSON error body, or - when it is accepted (202) - a dead letter with its reason (or, when
it is a valid record after all, a record); after every input each service still answers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer

from pipelines.core.config import KafkaSettings
from pipelines.core.records import MAX_NESTING_DEPTH
from pipelines.core.topics import decode_headers
from pipelines.devbroker import free_port
from tests.reliability.results import ScenarioResult, record_result
from tests.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "bad_inputs"
BATCH = "/api/v1/ingest/badinput/thing/batch"
MB = 1024 * 1024


@dataclass
class Case:
    name: str
    body: bytes | Iterator[bytes]
    expect: int | str  # an HTTP status, "dlq", "stored" or "rejected" (a stream's lines)
    code: str | None = None
    path: str = BATCH
    content_type: str | None = "application/json"
    location: str | None = None


def _nested(depth: int) -> bytes:
    return b'{"records": [{"name": "deep", "d": ' + b"[" * depth + b"]" * depth + b"}]}"


def _hundred_megabytes() -> Iterator[bytes]:
    """A 100 MB batch body, streamed (chunked, no Content-Length): never all in memory."""
    yield b'{"records": [{"name": "big", "blob": "'
    chunk = b"x" * MB
    for _ in range(100):
        yield chunk
    yield b'"}]}'


def _record(name: str) -> bytes:
    return orjson.dumps({"records": [{"name": name, "source_id": "s"}]})


def corpus_cases() -> list[Case]:
    manifest = orjson.loads((CORPUS / "manifest.json").read_bytes())
    return [
        Case(
            name,
            (CORPUS / name).read_bytes(),
            spec.get("status", spec.get("expect")),
            spec.get("code"),
            location=spec.get("location"),
        )
        for name, spec in manifest.items()
        if not name.startswith("_")
    ]


def generated_cases() -> list[Case]:
    sql_vertical = "a%22%3B%20drop%20table%20x%3B%20--"
    item = {"name": "x", "entity": 'a"; drop table x; --', "type": "t"}
    return [
        Case("nesting 200 levels", _nested(200), 400, "too_deep"),
        Case("name of 100,000 characters", _record("n" * 100_000), "dlq"),
        Case("body of 100 MB, streamed", _hundred_megabytes(), 413, "body_too_large"),
        Case(
            "content type text/plain",
            _record("a"),
            415,
            "unsupported_media_type",
            content_type="text/plain",
        ),
        Case(
            "content type form",
            b"name=a",
            415,
            "unsupported_media_type",
            content_type="application/x-www-form-urlencoded",
        ),
        Case(
            "JSON to the NDJSON stream",
            _record("a"),
            415,
            "unsupported_media_type",
            path="/api/v1/ingest/badinput/thing/stream",
        ),
        Case(
            "SQL-like vertical",
            _record("a"),
            400,
            "invalid_vertical",
            path=f"/api/v1/ingest/{sql_vertical}/thing/batch",
        ),
        Case(
            "SQL-like type",
            _record("a"),
            400,
            "invalid_type",
            path="/api/v1/ingest/badinput/x%27%3B%20DELETE%20FROM%20records%3B--/batch",
        ),
        Case(
            "path-like vertical ..%2F..%2Fetc",
            _record("a"),
            404,
            "not_found",
            path="/api/v1/ingest/..%2F..%2Fetc/thing/batch",
        ),
        Case(
            "path-like type with a backslash",
            _record("a"),
            400,
            "invalid_type",
            path="/api/v1/ingest/badinput/..%5Cwindows/batch",
        ),
        Case(
            "unicode vertical",
            _record("a"),
            400,
            "invalid_vertical",
            path="/api/v1/ingest/%C3%A9t%C3%A9/thing/batch",
        ),
        Case(
            "SQL-like entity on the item route",
            orjson.dumps(item),
            422,
            "invalid_vertical",
            path="/api/v1/ingest",
        ),
        *undecodable_value_cases(),
    ]


def undecodable_value_cases() -> list[Case]:
    """Invalid UTF-8 and numbers beyond a float on every route besides the batch's."""
    single, hook = "/api/v1/ingest/badinput/thing", "/api/v1/webhooks/ingest/badinput/thing"
    stream = "/api/v1/ingest/badinput/thing/stream"
    utf8, huge = b'{"name": "caf\xe9", "source_id": "v1"}', b'{"name": "n", "price": -1e400}'
    item = b'{"entity": "badinput", "type": "thing", "title": "x", "n": [' + b"9" * 320 + b"]}"
    return [
        Case("invalid UTF-8, single", utf8, 400, "invalid_utf8", single, location="body.name"),
        Case("-1e400, single", huge, 400, "number_out_of_range", single, location="body.price"),
        Case(
            "huge integer, item",
            item,
            400,
            "number_out_of_range",
            "/api/v1/ingest",
            location="body.n.0",
        ),
        Case("invalid UTF-8, webhook", utf8, 400, "invalid_utf8", hook, location="body.name"),
        Case(
            "-1e400, webhook array",
            b"[" + utf8.replace(b"caf\xe9", b"ok") + b", " + huge + b"]",
            400,
            "number_out_of_range",
            hook,
            location="body.1.price",
        ),
        Case(
            "invalid UTF-8 and 1e400, stream lines",
            utf8 + b"\n" + huge + b"\n",
            "rejected",
            None,
            stream,
            "application/x-ndjson",
        ),
    ]


def _send_streamed(port: int, case: Case) -> tuple[int, bytes]:
    """POST a chunked body over a raw socket, stopping as soon as the server answers, as
    a client that reads while it writes does (httpx would only see the reset)."""
    assert not isinstance(case.body, bytes)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST {case.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {case.content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for chunk in case.body:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 20:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post(client: httpx.Client, base: str, case: Case) -> httpx.Response:
    if not isinstance(case.body, bytes):
        status, body = _send_streamed(int(base.rsplit(":", 1)[1]), case)
        return httpx.Response(status, content=body.split(b"\r\n")[1] if b"\r\n" in body else body)
    headers = {"content-type": case.content_type} if case.content_type else {}
    try:
        return client.post(base + case.path, content=case.body, headers=headers)
    except httpx.HTTPError as exc:  # the server may answer and close before the body ends
        raise AssertionError(f"{case.name}: no answer ({exc!r})") from exc


def _stream_problems(case: Case, response: httpx.Response) -> list[str]:
    """A stream's bad lines are each rejected with their code; nothing of them produced."""
    body = response.json() if response.status_code == 202 else {}
    codes = [error["code"] for error in body.get("errors", [])]
    if body.get("accepted") != 0 or codes != ["invalid_utf8", "number_out_of_range"]:
        return [f"{case.name}: {response.status_code} {response.text[:300]}"]
    return []


def _outcomes(
    kafka: KafkaSettings, ingestions: set[str], timeout: float = 60
) -> dict[str, tuple[str, dict[str, str]]]:
    """ingestion id -> ("stored" | "dlq", headers), read from the records and DLQ topics."""
    consumer = Consumer(
        kafka.client(**{"group.id": f"bad-{kafka.topic_prefix}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([kafka.topics.records, kafka.topics.dlq])
    found: dict[str, tuple[str, dict[str, str]]] = {}
    deadline = time.monotonic() + timeout
    try:
        while not ingestions <= found.keys() and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            headers = decode_headers(message.headers())
            kind = "dlq" if message.topic() == kafka.topics.dlq else "stored"
            ingestion = headers.get("qanat.ingestion_id", "")
            if kind == "dlq" or ingestion not in found:
                found[ingestion] = (kind, headers)
    finally:
        consumer.close()
    return found


def test_every_bad_input_is_a_clear_4xx_or_a_dead_letter_and_services_stay_up(
    kafka: KafkaSettings, services: Services, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": str(kafka.partitions),
        "QANAT_HTTP_PORT": str(port),
        "QANAT_HTTP_AUTH": "none",
        "QANAT_HTTP_WEBHOOK_ALLOW_UNSIGNED": "true",
        "QANAT_OPS_PORT": "0",
    }
    (services.logs.parent / "no-schemas").mkdir()
    services.env["QANAT_TRANSFORM_SCHEMA_DIR"] = str(services.logs.parent / "no-schemas")
    services.start("source-http", "source", "http")
    services.start("transform", "transform")
    base = f"http://127.0.0.1:{port}"
    services.wait_http(f"{base}/readyz")

    problems: list[str] = []
    accepted: dict[str, Case] = {}
    cases = corpus_cases() + generated_cases()
    server_errors = 0
    for case in cases:
        # A connection of its own per input: after a refused body the server may close it.
        with httpx.Client(timeout=60) as client:
            response = _post(client, base, case)
            server_errors += response.status_code >= 500
            if case.expect == "rejected":
                problems += _stream_problems(case, response)
            elif response.status_code == 202:
                accepted[response.json()["ingestion_id"]] = case
                if not isinstance(case.expect, str):
                    problems.append(f"{case.name}: 202, expected {case.expect}")
            elif response.status_code != case.expect:
                problems.append(
                    f"{case.name}: {response.status_code} {response.text[:300]}, "
                    f"expected {case.expect}"
                )
            else:
                error = response.json()["error"]
                assert {"code", "message", "location", "details"} <= error.keys(), case.name
                if case.code and error["code"] != case.code:
                    problems.append(f"{case.name}: code {error['code']}, expected {case.code}")
                if case.location and error["location"] != case.location:
                    problems.append(f"{case.name}: at {error['location']}, not {case.location}")
                assert "Traceback" not in response.text
            services.check_alive()
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}, case.name

    outcomes = _outcomes(kafka, set(accepted))
    for ingestion, case in accepted.items():
        kind, headers = outcomes.get(ingestion, ("nothing", {}))
        if kind != case.expect:
            problems.append(f"{case.name}: {kind}, expected {case.expect}")
        elif kind == "dlq" and not headers.get("qanat.error.reason"):
            problems.append(f"{case.name}: a dead letter without a reason: {headers}")
    services.check_alive()
    landed = [i for i in accepted if i in outcomes]
    record_result(
        ScenarioResult(
            "bad inputs (stored = record or dead letter)",
            sent=len(cases),
            accepted=len(accepted),
            stored=len(landed),
            lost=len(accepted) - len(landed),
            duplicated=0,
            server_errors=server_errors,
        )
    )
    request.config._qanat_reliability_ran = True  # type: ignore[attr-defined]
    assert not problems, "\n".join(problems)


def nesting_and_size_cases() -> list[Case]:
    deepest = f"body.records.0.d{'.0' * (MAX_NESTING_DEPTH - 1)}"
    return [
        Case("nesting 100,000 levels", _nested(100_000), 400, "too_deep", location=deepest),
        Case("nesting 10,000 levels", _nested(10_000), 400, "too_deep", location=deepest),
        Case("nesting 1,000 levels", _nested(1_000), 400, "too_deep", location=deepest),
        Case("nesting 500 levels", _nested(500), 400, "too_deep", location=deepest),
        Case("nesting one level too deep", _nested(MAX_NESTING_DEPTH), 400, "too_deep"),
        Case("nesting at the limit", _nested(MAX_NESTING_DEPTH - 1), 202),
        Case(
            "string of 5 MB in vertical_data (over Kafka's message.max.bytes)",
            orjson.dumps({"records": [{"name": "big", "source_id": "b", "blob": "y" * (5 * MB)}]}),
            413,
            "record_too_large",
            location="body.records.0",
        ),
        Case(
            "9 MB of tiny records",
            b'{"records": [' + b"{}," * (9 * MB // 3) + b"{}]}",
            413,
            "too_many_records",
            location="body.records",
        ),
    ]


def test_deep_nesting_and_a_record_too_large_for_kafka_get_a_4xx(kafka: KafkaSettings) -> None:
    from fastapi.testclient import TestClient

    from sources.http.app import create_app
    from sources.http.settings import HttpSourceSettings

    app = create_app(kafka, HttpSourceSettings(auth="none", read_store="none"))
    answers, expected = [], []
    with TestClient(app, raise_server_exceptions=False) as client:
        for case in nesting_and_size_cases():
            assert isinstance(case.body, bytes)
            response = client.post(
                BATCH, content=case.body, headers={"content-type": "application/json"}
            )
            error = response.json().get("error", {})
            answers.append((case.name, response.status_code, error.get("code")))
            expected.append((case.name, case.expect, case.code))
            if case.location:
                assert error["location"] == case.location, case.name
    assert answers == expected
