"""The configuration reference, generated from the settings models.

``python -m pipelines.cli.configdoc`` rewrites ``docs/configuration.md``; ``--check`` exits 1
when the file is not current (the test suite checks it). Like the CLI, this tool knows
every part, so it names the connector modules that define settings; nothing at run time
imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pipelines.cli.configdoc_cells import default_cell, text_cell, type_cell
from pipelines.cli.configdoc_pull import render_pull_sources
from pipelines.core.config import CONFIG_FILE_ENV, QanatSettings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SETTINGS_MODULES = (
    "pipelines.core.config",
    "pipelines.core.ops",
    "pipelines.transform.stage",
    "sources.http.settings",
    "sources.mqtt.settings",
    "sources.files.source",
    "sinks.sqlite.sink",
    "sinks.postgres.settings",
    "sinks.errors",
)


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    direct: list[type] = cls.__subclasses__()
    for sub in direct:
        found += [sub, *_subclasses(sub)]
    return found


def settings_models() -> list[type[QanatSettings]]:
    """Every settings model of qanat, in the order of SETTINGS_MODULES."""
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    order = {name: index for index, name in enumerate(SETTINGS_MODULES)}
    models = [m for m in _subclasses(QanatSettings) if m.__module__ in order]
    return sorted(models, key=lambda m: (order[m.__module__], m.__name__))


def env_name(model: type[QanatSettings], field: str) -> str:
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings models by `python -m pipelines.cli.configdoc`; do not edit.",
        "",
        "Every setting is read, highest priority first, from the environment variable",
        f"named below, then from its section of the YAML file named by `{CONFIG_FILE_ENV}`.",
        "Start-up fails with one message that lists every invalid setting.",
    ]
    for model in settings_models():
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"## {model.__name__}", "", doc, ""]
        if model.yaml_section:
            lines += [f"YAML section: `{model.yaml_section}`", ""]
        lines += ["| Environment variable | Type | Default | Description |", "|---|---|---|---|"]
        for field, info in model.model_fields.items():
            description = text_cell(info.description or "")
            if info.examples:
                description += " Examples: " + ", ".join(f"`{e}`" for e in info.examples) + "."
            lines.append(
                f"| `{env_name(model, field)}` | {type_cell(info)} | {default_cell(info)} | "
                f"{text_cell(description)} |"
            )
    lines += render_pull_sources()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python -m pipelines.cli.configdoc", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
