"""Security checks, one test each (issue 9). Checks that already have a test elsewhere are
listed here with it, not repeated:

* webhook replay window: tests/sources/http/test_webhooks.py
  ``test_an_old_or_future_timestamp_is_refused_as_a_replay`` and
  ``test_a_required_timestamp_must_be_there``;
* per-key rate limits: tests/sources/http/test_limits.py (per client, webhooks and
  WebSocket messages included);
* body size limits: tests/reliability/test_bad_inputs.py (a streamed 100 MB body is a 413
  ``body_too_large``) and tests/sources/http/test_single.py;
* API keys stored only hashed: tests/sources/http/test_auth.py
  ``test_a_created_key_verifies_and_is_stored_only_hashed`` (and, with the service's own
  log, below);
* scopes enforced on every route and WebSocket, before the request is validated:
  tests/reliability/test_scopes.py.
"""

from __future__ import annotations

import ast
import hmac
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines.core.config import KafkaSettings
from pipelines.core.records import check_identifier
from pipelines.devbroker import free_port
from sources.http import auth
from sources.http import webhooks as http_webhooks
from tests.reliability.http_app import WEBHOOK_SECRET, capture_app, make_keys
from tests.services import Services

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = 'a"; drop table x; --'


def _qanat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.integration
def test_api_keys_are_stored_hashed_and_never_logged(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    port = free_port()
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_HTTP_PORT": str(port),
        "QANAT_OPS_PORT": "0",
        "QANAT_LOG_LEVEL": "DEBUG",
    }
    created = _qanat(
        services.env, "keys", "create", "--name", "sec", "--scope", "write", "--vertical", "sec"
    )
    assert created.returncode == 0, created.stderr
    key = next(w for w in created.stdout.split() if w.startswith(auth.PREFIX))
    secret = _id_and_secret(key)[1]
    assert len(secret) >= 16, created.stdout
    services.start("source-http", "source", "http")
    services.wait_http(f"http://127.0.0.1:{port}/readyz")
    url = f"http://127.0.0.1:{port}/api/v1/ingest/sec/thing/batch"
    body = {"records": [{"name": "a", "source_id": "k1"}]}
    assert httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}).status_code == 202
    wrong = key[:-4] + "zzzz"
    assert (
        httpx.post(url, json=body, headers={"authorization": f"Bearer {wrong}"}).status_code == 401
    )
    listed = _qanat(services.env, "keys", "list")
    services.stop()

    log = (services.logs / "source-http.log").read_text()
    assert "/api/v1/ingest/sec/thing/batch" in log, "the service logged no request"
    for text, where in ((log, "the service's log"), (listed.stdout + listed.stderr, "keys list")):
        assert secret not in text and wrong[-20:] not in text, f"a key's secret is in {where}"
    with sqlite3.connect(tmp_path / "data" / "keys.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump and auth.hash_secret(*_id_and_secret(key)) in dump


def _id_and_secret(token: str) -> tuple[str, str]:
    parsed = auth.parse_key(token)
    assert parsed is not None
    return parsed


@pytest.fixture
def real_app(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FastAPI]:
    """The application ``qanat source http`` serves, captured from the CLI itself."""
    yield capture_app(kafka, tmp_path / "data", monkeypatch)


def test_hmac_and_key_comparisons_are_constant_time(real_app: FastAPI, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "data")
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    body = b'{"name": "signed", "source_id": "h1"}'
    stamp = str(int(time.time()))
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, "sha256").hexdigest()
    with mock.patch.object(hmac, "compare_digest", spy), TestClient(real_app) as client:
        for sig in (signature, "0" * 64):
            client.post(
                "/api/v1/webhooks/ingest/sec/thing",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-webhook-signature": f"sha256={sig}",
                    "x-webhook-timestamp": stamp,
                },
            )
        client.post(
            "/api/v1/ingest/sec/thing",
            json={},
            headers={"authorization": f"Bearer {keys['write']}"},
        )
    compared = [a if isinstance(a, bytes) else str(a).encode() for pair in calls for a in pair]
    assert signature.encode() in compared and b"0" * 64 in compared, "webhook not compared"
    assert len(calls) >= 3, "the API key's hash was not compared with compare_digest"
    # And nowhere a plain == on a signature or hash (the modules import hmac itself).
    for module in (http_webhooks, auth):
        source = Path(module.__file__ or "").read_text()
        assert "compare_digest(" in source
        assert "hexdigest() ==" not in source and "== expected" not in source


@pytest.mark.parametrize(
    "name", [HOSTILE, "a'; DELETE FROM records; --", "../etc", "A", "x y", "é"]
)
def test_hostile_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_identifier("vertical", name)


def _hostile_records() -> list[dict[str, Any]]:
    from tests.sinks.conformance import record

    return [
        record(HOSTILE, name=HOSTILE, vertical_data={HOSTILE: HOSTILE, "q": "' OR 1=1 --"}),
        record("x'); DROP TABLE records; --", name="Robert'); DROP TABLE students;--"),
    ]


def _check_sink(sink: Any, read_rows: Any) -> None:
    from tests.sinks.conformance import deliver

    sink.setup()
    values = _hostile_records()
    deliver(sink, *enumerate(values))
    rows = read_rows()
    for value in values:
        row = rows[(value["vertical"], value["type"], value["source_id"])]
        assert row["name"] == value["name"]


def test_hostile_values_are_stored_verbatim_by_the_sqlite_sink(tmp_path: Path) -> None:
    from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings
    from tests.sinks.conformance import ListDeadLetters

    sink = SQLiteSink(SQLiteSinkSettings(path=tmp_path / "q.db"), dead_letters=ListDeadLetters())

    def rows() -> dict[tuple[str, str, str], dict[str, Any]]:
        with sqlite3.connect(tmp_path / "q.db") as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute("SELECT * FROM records").fetchall()
            assert {t for (t,) in conn.execute("SELECT name FROM sqlite_master")} >= {"records"}
        return {(r["vertical"], r["type"], r["source_id"]): dict(r) for r in found}

    _check_sink(sink, rows)


@pytest.mark.integration
def test_hostile_values_are_stored_verbatim_by_the_postgres_sink(postgres_dsn: str) -> None:
    import uuid

    import psycopg
    from psycopg import sql

    from sinks.postgres.sink import PostgresSink
    from tests.sinks.conformance import ListDeadLetters
    from tests.sinks.postgres.test_sink import pg_settings, read_table

    table = f"sec_{uuid.uuid4().hex[:10]}"
    sink = PostgresSink(pg_settings(postgres_dsn, table), dead_letters=ListDeadLetters())
    try:
        _check_sink(sink, lambda: read_table(postgres_dsn, "public", table))
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("public", table)))


SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|COPY)\b")


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _code_strings(code: str) -> list[str]:
    """The string literals of a module, docstrings left out."""
    tree = ast.parse(code)
    skip = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def _fstring_parts(code: str) -> list[str]:
    """The literal text of every f-string of a module."""
    return [
        "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.JoinedStr)
    ]


def test_sinks_build_sql_with_quoted_identifiers_only() -> None:
    """PostgreSQL SQL goes through psycopg.sql (Identifier / Literal), never a bare
    f-string; SQLite identifiers go through the quoting helper, values through ``?``."""
    building = [
        path
        for path in sorted((ROOT / "sinks" / "postgres").glob("*.py"))
        if any(SQL_WORD.search(text) for text in _code_strings(path.read_text()))
    ]
    assert len(building) >= 5, building  # records, errors, ingestions, progress, reader
    for path in building:
        code = path.read_text()
        assert "sql.Identifier(" in code or "sql.Composed" in code or "sql.SQL(" in code, path
        assert not any(SQL_WORD.search(text) for text in _fstring_parts(code)), path
    from sinks.sqlite import sink as sqlite

    assert sqlite._q(HOSTILE) == '"a""; drop table x; --"'
    for statement in sqlite.ddl(HOSTILE):  # the hostile name only ever inside quotes
        assert "drop table" not in re.sub(r'"(?:[^"]|"")*"', "", statement), statement
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE x (n)")
        for statement in sqlite.ddl(HOSTILE):
            conn.execute(statement)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "x" in names and HOSTILE in names


def test_secrets_are_never_printed_in_config_dumps_logs_or_docs(tmp_path: Path) -> None:
    from pipelines.core.config import load
    from sinks.postgres.settings import PostgresSinkSettings
    from sources.http.settings import HttpSourceSettings

    secret = "Sup3r-s3cret-Value-42"
    dsn = f"postgresql://qanat:{secret}@127.0.0.1:1/nowhere"
    env = {
        "QANAT_HTTP_WEBHOOK_SECRET": secret,
        "QANAT_HTTP_WEBHOOK_SECRETS": f'{{"shop": "{secret}"}}',
        "QANAT_POSTGRES_DSN": dsn,
    }
    with mock.patch.dict("os.environ", env):
        settings = [load(HttpSourceSettings), load(PostgresSinkSettings)]
    for model in settings:
        for text in (repr(model), str(model), model.model_dump_json(), str(model.model_dump())):
            assert secret not in text, type(model).__name__
    # A service that cannot reach its database says so without the password.
    import os

    env_all = {k: v for k, v in os.environ.items() if not k.startswith("QANAT_")} | env
    env_all |= {"QANAT_DATA_DIR": str(tmp_path), "QANAT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    failed = _qanat(env_all, "sink", "postgres")
    assert failed.returncode != 0
    assert secret not in failed.stdout + failed.stderr
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert secret not in docs
    for line in docs.splitlines():  # every secret's default is empty: no secret in the docs
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 3 and cells[2].startswith("SecretStr"):
            assert cells[3] in ("`None`", "**required**"), line
        elif len(cells) > 3 and "SecretStr]" in cells[2]:
            assert cells[3] == "`{}`", line
