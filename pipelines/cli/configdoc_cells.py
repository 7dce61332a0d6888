"""The cells of the configuration reference's tables, shared by its settings part
(:mod:`pipelines.cli.configdoc`) and its pull-source part (:mod:`pipelines.cli.configdoc_pull`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def default_cell(info: FieldInfo) -> str:
    """The default column: the value, required, or computed."""
    if info.default_factory in (dict, list):
        return "`{}`" if info.default_factory is dict else "`[]`"
    if info.default_factory is not None:
        return "(computed: see description)"
    if info.default is PydanticUndefined:
        return "**required**"
    default: Any = info.default
    if isinstance(default, Path):
        default = str(default)
    return f"`{default!r}`" if not isinstance(default, str) else f'`"{default}"`'


def type_cell(info: FieldInfo) -> str:
    """The type column: the annotation without module prefixes."""
    annotation = info.annotation
    generic = getattr(annotation, "__args__", None) is not None
    name = str(annotation) if generic else getattr(annotation, "__name__", str(annotation))
    for module in ("typing.", "pathlib.", "pydantic.types."):
        name = name.replace(module, "")
    return name.replace("|", "\\|")


def text_cell(text: str) -> str:
    """One line of Markdown table cell: whitespace collapsed, pipes escaped.

    >>> text_cell('a |\\n b')
    'a \\\\| b'
    """
    return " ".join(text.split()).replace("|", "\\|")
