"""Signed webhooks against the real broker: 202 only with a good signature, 401 saying why.

The app runs with ``auth: keys`` and an empty key store: webhooks need no API key (the
signature authenticates them)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from pipelines.core.config import KafkaSettings, load
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore
from sources.http.settings import HttpSourceSettings
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration
GLOBAL, OWN, SEGMENT = "global-secret", "own-secret", "segment-secret"
JSON = {"content-type": "application/json"}


def url(vertical: str = "shop", type_: str = "product") -> str:
    return f"/api/v1/webhooks/ingest/{vertical}/{type_}"


NOW = "now"  # sign with the current time


def stamp_of(timestamp: str | None) -> str | None:
    return str(int(time.time())) if timestamp == NOW else timestamp


def signed(body: bytes, timestamp: str | None) -> bytes:
    return body if timestamp is None else f"{timestamp}.".encode() + body


def sha256_header(secret: str, body: bytes, timestamp: str | None = NOW) -> dict[str, str]:
    """The headers of ``body`` signed with ``secret`` (and ``timestamp``, None: the old
    style, the body alone)."""
    timestamp = stamp_of(timestamp)
    digest = hmac.new(secret.encode(), signed(body, timestamp), hashlib.sha256).hexdigest()
    headers = {**JSON, "X-Webhook-Signature": f"sha256={digest}"}
    if timestamp is not None:
        headers["X-Webhook-Timestamp"] = timestamp
    return headers


def segment_header(secret: str, body: bytes, timestamp: str | None = NOW) -> dict[str, str]:
    timestamp = stamp_of(timestamp)
    digest = hmac.new(secret.encode(), signed(body, timestamp), hashlib.sha1).hexdigest()
    headers = {**JSON, "X-Signature": digest}
    if timestamp is not None:
        headers["X-Webhook-Timestamp"] = timestamp
    return headers


def make_client(kafka: KafkaSettings, tmp_path: Path, **settings: Any) -> TestClient:
    http = HttpSourceSettings(
        webhook_secret=GLOBAL,
        webhook_secrets={"own": OWN, "seg": SEGMENT},
        webhook_schemes={"seg": "segment"},
        max_records=5,
        **settings,
    )
    keys = SQLiteKeyStore(tmp_path / "keys.db")
    return TestClient(create_app(kafka, http, keys=keys), raise_server_exceptions=False)


@pytest.fixture
def client(kafka: KafkaSettings, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(kafka, tmp_path) as test_client:
        yield test_client


def assert_refused(response: httpx.Response, code: str, reason: str) -> None:
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert reason in error["message"]


def test_one_signed_object_lands_with_its_exact_bytes(
    client: TestClient, kafka: KafkaSettings
) -> None:
    body = b'{"name": "Lamp",  "source_id": "p1"}'
    response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body))
    assert response.status_code == 202
    answer = response.json()
    assert answer["record_count"] == 1
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.value == body
    assert landed.key == b"shop/product/p1"
    assert landed.headers["qanat.ingestion_id"] == answer["ingestion_id"]
    assert landed.headers["qanat.source"] == "http"


def test_an_array_is_many_events_of_one_ingestion_with_each_elements_bytes(
    client: TestClient, kafka: KafkaSettings
) -> None:
    elements = [b'{"name": "a, [b]", "source_id": "x1"}', b'{"name":"c\\"}","n":[1,{"d":2}]}']
    body = b"[ " + b" ,\n".join(elements) + b" ]"
    response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body))
    assert response.status_code == 202
    answer = response.json()
    assert answer["record_count"] == 2
    landed = consume(kafka, kafka.topics.raw, expected=2)
    assert sorted(m.value or b"" for m in landed) == sorted(elements)
    assert {m.headers["qanat.ingestion_id"] for m in landed} == {answer["ingestion_id"]}
    assert len({m.headers["qanat.event_id"] for m in landed}) == 2


def test_a_verticals_own_secret_replaces_the_global_one(client: TestClient) -> None:
    body = b'{"name": "x"}'
    refused = client.post(url("own"), content=body, headers=sha256_header(GLOBAL, body))
    assert_refused(refused, "bad_signature", "bad signature")
    accepted = client.post(url("own"), content=body, headers=sha256_header(OWN, body))
    assert accepted.status_code == 202


def test_segment_scheme_signs_with_hmac_sha1_in_x_signature(
    client: TestClient, kafka: KafkaSettings
) -> None:
    body = b'{"name": "seg"}'
    response = client.post(url("seg"), content=body, headers=segment_header(SEGMENT, body))
    assert response.status_code == 202
    wrong = client.post(url("seg"), content=body, headers=segment_header(GLOBAL, body))
    assert_refused(wrong, "bad_signature", "bad signature")
    sha256 = client.post(url("seg"), content=body, headers=sha256_header(SEGMENT, body))
    assert_refused(sha256, "missing_signature", "x-signature")
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.value == body


def test_missing_bad_and_unknown_signatures_are_401_and_nothing_lands(
    client: TestClient, kafka: KafkaSettings
) -> None:
    body = b'{"name": "x"}'
    assert_refused(client.post(url(), content=body, headers=JSON), "missing_signature", "missing")
    tampered = sha256_header(GLOBAL, body)
    response = client.post(url(), content=b'{"name": "y"}', headers=tampered)
    assert_refused(response, "bad_signature", "bad signature")
    stamped = {**JSON, "X-Webhook-Timestamp": str(int(time.time()))}
    garbage = {**stamped, "X-Webhook-Signature": "sha256=zz"}
    assert_refused(client.post(url(), content=body, headers=garbage), "bad_signature", "bad")
    digest = hmac.new(GLOBAL.encode(), body, hashlib.md5).hexdigest()
    md5 = {**stamped, "X-Webhook-Signature": f"md5={digest}"}
    assert_refused(client.post(url(), content=body, headers=md5), "unknown_signature_scheme", "md5")
    bare = {
        **stamped,
        "X-Webhook-Signature": sha256_header(GLOBAL, body)["X-Webhook-Signature"][7:],
    }
    response = client.post(url(), content=body, headers=bare)
    assert_refused(response, "unknown_signature_scheme", "unknown signature scheme")
    assert consume(kafka, kafka.topics.raw, expected=0) == []


def test_a_signed_timestamp_within_tolerance_is_accepted(client: TestClient) -> None:
    body = b'{"name": "x"}'
    stamp = str(int(time.time()) - 60)
    response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body, stamp))
    assert response.status_code == 202


def test_an_old_or_future_timestamp_is_refused_as_a_replay(
    client: TestClient, kafka: KafkaSettings
) -> None:
    body = b'{"name": "x"}'
    for skew in (-301, 400):
        stamp = str(int(time.time()) + skew)
        response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body, stamp))
        assert_refused(response, "timestamp_outside_tolerance", "timestamp outside tolerance")
    # the timestamp is signed: moving it (or signing only the body) breaks the signature
    headers = sha256_header(GLOBAL, body, str(int(time.time()) - 1000))
    headers["X-Webhook-Timestamp"] = str(int(time.time()))
    assert_refused(client.post(url(), content=body, headers=headers), "bad_signature", "bad")
    headers = {**sha256_header(GLOBAL, body, None), "X-Webhook-Timestamp": str(int(time.time()))}
    assert_refused(client.post(url(), content=body, headers=headers), "bad_signature", "bad")
    headers = {**sha256_header(GLOBAL, body), "X-Webhook-Timestamp": "yesterday"}
    assert_refused(client.post(url(), content=body, headers=headers), "invalid_timestamp", "unix")
    assert consume(kafka, kafka.topics.raw, expected=0) == []


def test_a_signature_without_a_timestamp_is_refused_by_default(
    client: TestClient, kafka: KafkaSettings
) -> None:
    body = b'{"name": "x"}'
    for path, headers in [
        (url(), sha256_header(GLOBAL, body, None)),
        (url("own"), sha256_header(OWN, body, None)),
        (url("seg"), segment_header(SEGMENT, body, None)),
    ]:
        response = client.post(path, content=body, headers=headers)
        assert_refused(response, "missing_timestamp", "could be replayed")
        assert response.json()["error"]["location"] == "header.x-webhook-timestamp"
    assert consume(kafka, kafka.topics.raw, expected=0) == []


def test_the_old_style_is_taken_only_when_the_setting_says_so(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QANAT_HTTP_WEBHOOK_REQUIRE_TIMESTAMP", "false")
    assert load(HttpSourceSettings).webhook_require_timestamp is False
    body = b'{"name": "x"}'
    with make_client(kafka, tmp_path, webhook_require_timestamp=False) as client:
        old = client.post(url(), content=body, headers=sha256_header(GLOBAL, body, None))
        segment = client.post(url("seg"), content=body, headers=segment_header(SEGMENT, body, None))
        stamped = client.post(url(), content=body, headers=sha256_header(GLOBAL, body))
        assert [old.status_code, segment.status_code, stamped.status_code] == [202] * 3
        stale = sha256_header(GLOBAL, body, str(int(time.time()) - 1000))
        assert_refused(
            client.post(url(), content=body, headers=stale), "timestamp_outside_tolerance", ""
        )
    assert len(consume(kafka, kafka.topics.raw, expected=3)) == 3


@pytest.mark.parametrize(
    "path", ["/api/v1/webhooks/ingest/own%0A/product", "/api/v1/webhooks/ingest/shop%0A/product"]
)
def test_a_vertical_with_a_trailing_newline_gets_no_secret(
    client: TestClient, kafka: KafkaSettings, path: str
) -> None:
    body = b'{"name": "x"}'
    for secret in (GLOBAL, OWN):
        response = client.post(path, content=body, headers=sha256_header(secret, body))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["location"]) == ("invalid_vertical", "path.vertical")
    assert consume(kafka, kafka.topics.raw, expected=0) == []


@pytest.mark.parametrize("setting", ["webhook_secrets", "webhook_schemes"])
def test_a_configured_vertical_must_be_exactly_an_identifier(setting: str) -> None:
    value = "s3cret" if setting == "webhook_secrets" else "segment"
    with pytest.raises(ValidationError, match="must match"):
        HttpSourceSettings(**{setting: {"own\n": value}})
    with pytest.raises(ValueError, match="must match"):
        HttpSourceSettings(webhook_secret=GLOBAL).webhook_policy("own\n")


def test_without_a_secret_unsigned_webhooks_need_explicit_permission(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    body = b'{"name": "x"}'
    settings = HttpSourceSettings(auth="none")
    with TestClient(create_app(kafka, settings), raise_server_exceptions=False) as client:
        response = client.post(url(), content=body, headers=JSON)
        assert_refused(response, "no_webhook_secret", "no webhook secret configured")
    settings = HttpSourceSettings(auth="none", webhook_allow_unsigned=True)
    with TestClient(create_app(kafka, settings)) as client:
        assert client.post(url(), content=body, headers=JSON).status_code == 202
    [landed] = consume(kafka, kafka.topics.raw, expected=1)
    assert landed.value == body


@pytest.mark.parametrize(
    ("body", "status", "code", "location"),
    [
        (b"{nope", 400, "invalid_json", "body"),
        (b'"text"', 422, "invalid_body", "body"),
        (b'[{"name": "a"}, 3]', 422, "invalid_record", "body.1"),
        (orjson.dumps([{"name": "a"}] * 6), 413, "too_many_records", "body"),
    ],
)
def test_signed_but_malformed_bodies_get_a_json_error(
    client: TestClient, body: bytes, status: int, code: str, location: str
) -> None:
    response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body))
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["location"]) == (code, location)


def test_an_empty_array_is_accepted_with_no_records(client: TestClient) -> None:
    body = b"[]"
    response = client.post(url(), content=body, headers=sha256_header(GLOBAL, body))
    assert response.status_code == 202
    assert response.json()["record_count"] == 0
