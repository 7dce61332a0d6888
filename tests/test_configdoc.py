"""docs/configuration.md is current, and every setting explains itself."""

from __future__ import annotations

import pytest

from pipelines.cli.configdoc import DOC, render, settings_models


def test_reference_is_current() -> None:
    assert DOC.exists(), "run: python -m pipelines.cli.configdoc"
    assert DOC.read_text(encoding="utf-8") == render(), (
        "stale: run python -m pipelines.cli.configdoc"
    )


@pytest.mark.parametrize("model", settings_models(), ids=lambda m: m.__name__)
def test_every_setting_has_a_description(model: type) -> None:
    missing = [name for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"{model.__name__}: no description for {missing}"


def test_every_model_has_its_own_env_prefix_and_yaml_section() -> None:
    models = settings_models()
    prefixes = [m.model_config.get("env_prefix") for m in models]
    assert len(set(prefixes)) == len(prefixes)
    assert all(m.yaml_section for m in models)
