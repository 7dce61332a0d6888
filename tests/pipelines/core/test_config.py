"""Settings from env and YAML, with every error reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core.config import KafkaSettings, load
from pipelines.core.errors import ConfigError
from pipelines.transform.stage import TransformSettings


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "qanat.yaml"
    config.write_text("kafka:\n  bootstrap_servers: yaml:9092\n  topic_prefix: fromyaml\n")
    monkeypatch.setenv("QANAT_CONFIG_FILE", str(config))
    monkeypatch.setenv("QANAT_KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    settings = load(KafkaSettings)
    assert settings.bootstrap_servers == "env:9092"
    assert settings.topic_prefix == "fromyaml"
    assert settings.topics.dlq == "fromyaml.dlq"


def test_every_error_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QANAT_TRANSFORM_MAX_MESSAGE_BYTES", "0")
    monkeypatch.setenv("QANAT_TRANSFORM_PROCESSING_GUARANTEE", "sometimes")
    with pytest.raises(ConfigError) as caught:
        load(TransformSettings)
    assert "QANAT_TRANSFORM_MAX_MESSAGE_BYTES" in str(caught.value)
    assert "QANAT_TRANSFORM_PROCESSING_GUARANTEE" in str(caught.value)


def test_unknown_yaml_keys_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "qanat.yaml"
    config.write_text("kafka:\n  bootstrap_server: typo:9092\n")
    monkeypatch.setenv("QANAT_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="BOOTSTRAP_SERVER"):
        load(KafkaSettings)


def test_client_config_passes_security_settings_through() -> None:
    settings = KafkaSettings(client_config={"security.protocol": "SASL_SSL"})
    assert settings.client(acks="all") == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "acks": "all",
    }
