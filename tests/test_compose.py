"""docker-compose.yml runs real qanat commands with real qanat settings (no Docker needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli.configdoc import env_name, settings_models
from pipelines.cli.main import app
from pipelines.core.config import CONFIG_FILE_ENV, QanatSettings
from pipelines.core.ops import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ONE_SHOT = {"db-init", "topics-init"}


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _qanat_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: spec for name, spec in services.items() if "build" in spec}


def _environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _settings_models() -> dict[str, type[QanatSettings]]:
    """Env var name -> the settings model it belongs to, for every qanat setting."""
    return {
        env_name(model, field): model for model in settings_models() for field in model.model_fields
    }


QANAT_SERVICES = sorted(_qanat_services())


def test_compose_has_the_qanat_services() -> None:
    expected = {"source-http", "transform", "sink-postgres", "sink-errors", "db-init"}
    assert set(QANAT_SERVICES) >= expected | {"topics-init"}
    assert {"kafka", "postgres", "mosquitto"} <= set(_compose()["services"])


def _ops_port(spec: dict[str, Any]) -> int:
    """The port a service answers /healthz and /readyz on, by its command and settings."""
    command, env = [str(part) for part in spec["command"]], _environment(spec)
    if command[:2] == ["source", "http"]:
        return int(env.get("QANAT_HTTP_PORT", "8080"))
    service = "-".join(command[:2]) if command[0] in ("source", "sink") else command[0]
    return int(env.get("QANAT_OPS_PORT", DEFAULT_PORTS[service]))


LONG_RUNNING = sorted(set(QANAT_SERVICES) - ONE_SHOT)


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_healthcheck_asks_the_service_itself(service: str) -> None:
    spec = _qanat_services()[service]
    test = " ".join(map(str, spec["healthcheck"]["test"]))
    port = _ops_port(spec)
    assert f"http://127.0.0.1:{port}/readyz" in test or f"http://127.0.0.1:{port}/healthz" in test


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_stop_grace_period_outlasts_the_shutdown_timeout(service: str) -> None:
    spec = _qanat_services()[service]
    grace = str(spec.get("stop_grace_period", "10s"))
    assert grace.endswith("s") and grace[:-1].isdigit(), grace
    timeout = float(_environment(spec).get("QANAT_OPS_SHUTDOWN_TIMEOUT_S", "20"))
    assert int(grace[:-1]) > timeout


def test_kafka_is_apache_kafka_4() -> None:
    image = _compose()["services"]["kafka"]["image"]
    name, _, tag = image.partition(":")
    assert name == "apache/kafka"
    assert tag.split(".")[0] == "4", image


@pytest.mark.parametrize("service", QANAT_SERVICES)
def test_command_is_a_qanat_subcommand(service: str) -> None:
    command = _qanat_services()[service].get("command")
    assert isinstance(command, list) and command, f"{service}: command must be a non-empty list"
    result = CliRunner().invoke(app, [*map(str, command), "--help"])
    assert result.exit_code == 0, (
        f"{service}: `qanat {' '.join(command)}` is not a command: {result.output}"
    )


@pytest.mark.parametrize("service", QANAT_SERVICES)
def test_service_reaches_kafka_and_waits_for_it(service: str) -> None:
    spec = _qanat_services()[service]
    assert _environment(spec).get("QANAT_KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092"
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    expected_restart = "no" if service in ONE_SHOT else "unless-stopped"
    assert spec.get("restart") == expected_restart


@pytest.mark.parametrize("service", QANAT_SERVICES)
def test_every_qanat_variable_is_a_real_setting(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        key: value
        for key, value in _environment(_qanat_services()[service]).items()
        if key.startswith("QANAT_")
    }
    models = _settings_models()
    unknown = sorted(set(env) - set(models) - {CONFIG_FILE_ENV})
    assert not unknown, f"{service}: not qanat settings: {unknown}"
    # The values must also be valid for the models they configure.
    for key in [key for key in os.environ if key.startswith("QANAT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for model in {models[key] for key in env if key in models}:
        model()


def test_sink_postgres_waits_for_db_init() -> None:
    services = _compose()["services"]
    sink = services["sink-postgres"]
    assert sink["depends_on"]["db-init"]["condition"] == "service_completed_successfully"
    assert (
        _environment(sink)["QANAT_POSTGRES_DSN"]
        == _environment(services["db-init"])["QANAT_POSTGRES_DSN"]
    )
