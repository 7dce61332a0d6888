"""API keys alone (no broker): the SQLite store, hashing at rest, and ``qanat keys``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.core.config import KafkaSettings
from pipelines.core.errors import ConfigError
from sources.http.app import create_app
from sources.http.auth import SQLiteKeyStore, create_key, parse_key, verify
from sources.http.settings import HttpSourceSettings


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    return SQLiteKeyStore(tmp_path / "keys.db")


def test_a_created_key_verifies_and_is_stored_only_hashed(
    store: SQLiteKeyStore, tmp_path: Path
) -> None:
    key, plaintext = create_key(store, "shop client", ["write"], ["shop"])
    parsed = parse_key(plaintext)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == key.id
    assert len(secret) >= 43  # token_urlsafe(32): 256 random bits
    assert verify(store, plaintext) == key
    at_rest = (tmp_path / "keys.db").read_bytes()
    assert secret.encode() not in at_rest
    assert plaintext.encode() not in at_rest
    assert key.id.encode() in at_rest


def test_a_wrong_secret_an_unknown_id_and_garbage_do_not_verify(store: SQLiteKeyStore) -> None:
    key, plaintext = create_key(store, "k", ["read"], None)
    assert verify(store, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert verify(store, plaintext.replace(key.id, "0" * 16)) is None
    for token in ("", "qk_", "qk_abc", f"qk_{key.id}_", "Bearer " + plaintext, "sk_1_2"):
        assert verify(store, token) is None


def test_a_revoked_key_no_longer_verifies(store: SQLiteKeyStore) -> None:
    key, plaintext = create_key(store, "k", ["write"], ["shop"])
    assert store.revoke(key.id)
    assert verify(store, plaintext) is None
    [listed] = store.list_keys()
    assert listed.revoked_at is not None
    assert not store.revoke("nope")


def test_scopes_and_verticals(store: SQLiteKeyStore) -> None:
    key, _ = create_key(store, "k", ["write"], ["shop", "news"])
    assert key.allows("write", "shop") and key.allows("write", "news")
    assert not key.allows("write", "other")
    assert not key.allows("read", "shop")
    every, _ = create_key(store, "all", ["read", "write"], None)
    assert every.allows("read", "anything")
    assert {k.id: k.verticals for k in store.list_keys()}[every.id] is None
    for scopes, verticals in ((["root"], ["shop"]), ([], ["shop"]), (["read"], ["Bad!"])):
        with pytest.raises(ValueError):
            create_key(store, "k", scopes, verticals)


def test_auth_keys_without_a_store_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="key store"):
        create_app(KafkaSettings(), HttpSourceSettings())


def test_the_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    runner = CliRunner()
    env: dict[str, str | None] = {"QANAT_DATA_DIR": str(tmp_path), "QANAT_HTTP_KEYS_PATH": None}
    args = ["keys", "create", "--name", "crm", "--vertical", "shop", "--vertical", "news"]
    created = runner.invoke(app, [*args, "--scope", "write", "--scope", "read"], env=env)
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    store = SQLiteKeyStore(tmp_path / "keys.db")
    key = verify(store, plaintext)
    assert key is not None
    assert key.scopes == {"read", "write"}
    assert key.verticals == {"shop", "news"}
    parsed = parse_key(plaintext)
    assert parsed is not None
    assert parsed[1].encode() not in (tmp_path / "keys.db").read_bytes()

    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0
    [line] = listed.stdout.splitlines()
    shown = orjson.loads(line)
    assert shown["id"] == key.id
    assert shown["name"] == "crm"
    assert shown["verticals"] == ["news", "shop"]
    assert shown["revoked_at"] is None
    assert parsed[1] not in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", key.id], env=env)
    assert revoked.exit_code == 0
    assert verify(store, plaintext) is None
    assert orjson.loads(runner.invoke(app, ["keys", "list"], env=env).stdout)["revoked_at"]
    assert runner.invoke(app, ["keys", "revoke", "nope"], env=env).exit_code == 1


def test_the_cli_key_for_every_vertical_and_its_mistakes(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "elsewhere" / "k.db"
    env = {"QANAT_DATA_DIR": str(tmp_path), "QANAT_HTTP_KEYS_PATH": str(path)}
    base = ["keys", "create", "--name", "ops", "--scope", "read"]
    created = runner.invoke(app, [*base, "--all-verticals"], env=env)
    assert created.exit_code == 0, created.output
    key = verify(SQLiteKeyStore(path), created.stdout.strip())
    assert key is not None and key.verticals is None
    for extra in ([], ["--all-verticals", "--vertical", "shop"]):
        result = runner.invoke(app, [*base, *extra], env=env)
        assert result.exit_code == 1
        assert "--all-verticals" in result.output
    no_scope = runner.invoke(app, ["keys", "create", "--name", "x", "--all-verticals"], env=env)
    assert no_scope.exit_code == 1
    assert "scopes" in no_scope.output
