"""``qanat collect CONFIG.yaml``: run every configured pull connector on its schedule.

The file lists the sources; each entry's ``kind`` names a connector (registered in the
``qanat.sources`` entry-point group, or ``module:Class``) whose pydantic model validates the
rest of the entry. ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) anywhere in a value is
replaced from the environment, so secrets stay out of the file. Every problem is reported
at once, each with its path::

    sources:
      - kind: rest
        name: shop-products
        vertical: shop
        type: product
        url: https://api.example.com/v1/products
        auth: {type: bearer, token: "${SHOP_API_TOKEN}"}
        schedule: 300

The same file may hold the ``kafka`` and ``core`` sections of qanat's settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.core.config import CONFIG_FILE_ENV
from pipelines.core.errors import ConfigError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def expand_env(value: Any, where: list[str | int], errors: list[str]) -> Any:
    """``value`` with every ``${NAME}`` replaced from the environment; a missing variable
    (without a ``:-default``) is an error at its path."""
    if isinstance(value, dict):
        return {k: expand_env(v, [*where, str(k)], errors) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, [*where, i], errors) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        errors.append(f"{_path(where)}: environment variable {name} is not set")
        return ""

    return ENV_REFERENCE.sub(replace, value)


def _error_path(data: Any, loc: tuple[Any, ...], prefix: list[str | int]) -> str:
    """A pydantic error location as a path in the YAML: a union member's tag (the value of
    its ``type``) and validator names are not keys, so they are left out."""
    parts = list(prefix)
    for part in loc:
        tagged = isinstance(data, dict) and part not in data and part == data.get("type")
        if tagged or (isinstance(part, str) and "[" in part):
            continue
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
        parts.append(part)
    return _path(parts)


def load_collect_config(path: Path) -> list[Any]:
    """Every configured source's settings, validated; ConfigError listing every problem."""
    from sources.runner import load_connector

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    errors: list[str] = []
    entries = document.get("sources") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: sources: a non-empty list of sources is required")
    settings: list[Any] = []
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where: list[str | int] = ["sources", index]
        if not isinstance(entry, dict):
            errors.append(f"{_path(where)}: must be a mapping")
            continue
        entry = expand_env(entry, where, errors)
        if not isinstance(entry.get("kind"), str):
            errors.append(f"{_path([*where, 'kind'])}: field required (rest, graphql, ...)")
            continue
        try:
            connector = load_connector(entry["kind"])
            validated = connector.settings_model.model_validate(entry)
        except LookupError as exc:
            errors.append(f"{_path([*where, 'kind'])}: {exc}")
            continue
        except ImportError as exc:
            hint = "is the connector's extra installed? (pip install 'qanat[all]')"
            errors.append(f"{_path([*where, 'kind'])}: {exc}: {hint}")
            continue
        except ValidationError as exc:
            errors += [
                f"{_error_path(entry, tuple(e['loc']), where)}: {e['msg']}" for e in exc.errors()
            ]
            continue
        if validated.name in names:
            first = names[validated.name]
            errors.append(f"{_path([*where, 'name'])}: {validated.name!r} is sources[{first}]'s")
        names.setdefault(validated.name, index)
        settings.append((connector, validated))
    if errors:
        raise ConfigError(f"invalid {path}:\n  " + "\n  ".join(errors))
    return settings


@fatal_errors
def collect(
    config: Annotated[Path, typer.Argument(help="YAML file with a sources: list.")],
    once: Annotated[bool, typer.Option(help="Poll every source once, then exit.")] = False,
    check: Annotated[bool, typer.Option(help="Only validate the file and list it.")] = False,
) -> None:
    """Run every configured pull connector on its schedule, until SIGTERM or Ctrl-C."""
    from quixstreams.sources.base.exceptions import SourceException

    from pipelines.core.ops import service_ops
    from sources.runner import run_sources

    configured = load_collect_config(config)
    if check:
        for _connector, settings in configured:
            typer.echo(f"{settings.name}: {settings.kind} {settings.schedule.describe()}")
        return
    os.environ.setdefault(CONFIG_FILE_ENV, str(config))  # its kafka/core sections apply
    core, kafka = service_settings()
    sources = [connector(settings, kafka.topics, once=once) for connector, settings in configured]
    try:  # /healthz, /readyz, /metrics on QANAT_OPS_PORT when it is set
        with service_ops("collect", kafka, topics=[kafka.topics.raw]) as ops:
            run_sources(sources, kafka, core, shutdown_timeout_s=ops.shutdown_timeout_s)
    except SourceException as exc:
        typer.echo(f"qanat: error: {exc}: {exc.__cause__}", err=True)
        raise typer.Exit(1) from None
