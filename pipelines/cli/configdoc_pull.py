"""The pull-source part of the configuration reference: one table per connector kind
registered in the ``qanat.sources`` entry-point group, its nested settings flattened to
dotted YAML keys. Used by :mod:`pipelines.cli.configdoc` (which, like the CLI, knows every part).
"""

from __future__ import annotations

import types
import typing
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipelines.cli.configdoc_cells import default_cell, text_cell, type_cell

ENTRY_POINT_GROUP = "qanat.sources"


def pull_connector_models() -> list[tuple[str, type[BaseModel]]]:
    """Every registered connector kind and its settings model, by kind."""
    found = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        found.append((point.name, point.load().settings_model))
    return found


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation is made of (through Optional, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return nested_models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    values = typing.get_args(field.annotation) if field else ()
    return str(values[0]) if values else None


def flatten(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo, str]]:
    """(dotted key, field, condition) for every field, nested models expanded; a member of
    a tagged union gets the condition ``type: <tag>``."""
    rows: list[tuple[str, FieldInfo, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        rows.append((key, info, ""))
        members = nested_models(info.annotation)
        for member in members:
            tag = _tag(member) if len(members) > 1 else None
            for sub_key, sub_info, condition in flatten(member, f"{key}."):
                if sub_key == f"{key}.type" and tag:
                    continue  # the tag is the condition
                rows.append((sub_key, sub_info, condition or (f"{key}.type: {tag}" if tag else "")))
    return rows


def _kind_of(info: FieldInfo) -> str:
    """The type column: a nested model is a mapping (its keys follow), a union names its
    members' tags."""
    members = nested_models(info.annotation)
    if not members:
        return type_cell(info)
    tags = [tag for tag in map(_tag, members) if tag]
    optional = " or null" if type(None) in _flat_args(info.annotation) else ""
    if len(members) > 1 and tags:
        return "mapping, type: " + " \\| ".join(tags) + optional
    return "mapping" + optional


def _flat_args(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flat_args(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flat_args(arg)]
    return [annotation]


def render_pull_sources() -> list[str]:
    """Markdown lines of the pull-source reference."""
    lines = [
        "",
        "## Pull sources (`qanat collect`)",
        "",
        "Each entry of the `sources:` list of the file given to `qanat collect`; `kind` picks",
        "the connector. `${ENV_VAR}` (or `${ENV_VAR:-default}`) in a value is read from the",
        "environment. Nested keys are dotted; a key that applies to one variant names it.",
    ]
    for kind, model in pull_connector_models():
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"### kind: {kind}", "", doc, ""]
        lines += ["| YAML key | Type | Default | Description |", "|---|---|---|---|"]
        for key, info, condition in flatten(model):
            description = text_cell(info.description or "")
            if info.examples:
                description += " Examples: " + ", ".join(f"`{e}`" for e in info.examples) + "."
            if condition:
                description = f"(when `{condition}`) {description}"
            lines.append(
                f"| `{key}` | {_kind_of(info)} | {default_cell(info)} | {text_cell(description)} |"
            )
    return lines
