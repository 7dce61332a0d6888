"""The application ``qanat source http`` serves, captured from the CLI itself (every
router it includes: ingest, control plane, DLQ, live read, ops), and API keys for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from pipelines.core.config import KafkaSettings
from sources.http.auth import SQLiteKeyStore, create_key

WEBHOOK_SECRET = "s3cret-value-for-tests"
VERTICAL = "sec"


def capture_app(kafka: KafkaSettings, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The app ``qanat source http`` would serve (uvicorn is not started)."""
    from pipelines.cli import main as cli

    for name, value in {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_DATA_DIR": str(data_dir),
        "QANAT_HTTP_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "exit_zero_after_sigterm", lambda: None, raising=False)
    app: FastAPI = cli.http_service_config().app
    return app


def make_keys(data_dir: Path) -> dict[str, str]:
    """One key per scope (every vertical), one with every scope on another vertical only,
    and one with every scope on every vertical."""
    store = SQLiteKeyStore(data_dir / "keys.db")
    out = {}
    for scope in ("read", "write", "admin"):
        out[scope] = create_key(store, f"only-{scope}", [scope], None)[1]
    every = ["read", "write", "admin"]
    out["other-vertical"] = create_key(store, "other", every, ["other"])[1]
    out["all"] = create_key(store, "all", every, None)[1]
    return out


def flatten(routes: list[Any]) -> list[Any]:
    """Every route, included routers' too (FastAPI keeps those as included routers)."""
    out = []
    for route in routes:
        router = getattr(route, "original_router", None)
        out += flatten(list(router.routes)) if router is not None else [route]
    return out
