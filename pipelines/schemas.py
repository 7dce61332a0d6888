"""JSON Schemas per vertical/type, and validation with every error's JSON path.

A schema describes the object a client sends (before normalization), so each error's
path points into the client's own payload. Schemas are JSON Schema draft 2020-12.
For now they are read from a directory laid out as ``{vertical}/{type}.json``.

>>> store = SchemaStore({("shop", "product"): {"type": "object", "required": ["price"]}})
>>> store.validate("shop", "product", {"name": "x"})[1][0]["message"]
"'price' is a required property"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from pipelines.errors import ConfigError
from pipelines.records import IDENTIFIER

SchemaKey = tuple[str, str]


def json_path(parts: Iterable[str | int]) -> str:
    """``['a', 0, 'b']`` -> ``$.a[0].b`` (keys that are not identifiers are quoted)."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}"
        else:
            path += "[" + orjson.dumps(part).decode() + "]"
    return path


def _describe(error: ValidationError) -> dict[str, Any]:
    return {
        "path": json_path(error.absolute_path),
        "message": error.message,
        "validator": str(error.validator),
        "schema_path": "/".join(str(p) for p in error.absolute_schema_path),
    }


@dataclass
class _Entry:
    version: int
    validator: Draft202012Validator


class SchemaStore:
    """Validators for the registered schemas; a vertical/type without one is schemaless."""

    def __init__(self, schemas: dict[SchemaKey, dict[str, Any]] | None = None) -> None:
        self._entries: dict[SchemaKey, _Entry] = {}
        for (vertical, type_), schema in (schemas or {}).items():
            self.put(vertical, type_, schema)

    def put(self, vertical: str, type_: str, schema: dict[str, Any], version: int = 1) -> None:
        """Register a schema; raises SchemaError with the meta-schema's reason if invalid."""
        Draft202012Validator.check_schema(schema)
        self._entries[(vertical, type_)] = _Entry(version, Draft202012Validator(schema))

    def __contains__(self, key: SchemaKey) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def validate(
        self, vertical: str, type_: str, obj: Any
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """(schema version or None when schemaless, every error sorted by path)."""
        entry = self._entries.get((vertical, type_))
        if entry is None:
            return None, []
        errors = sorted(entry.validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        return entry.version, [_describe(error) for error in errors]

    @classmethod
    def from_directory(cls, root: Path) -> SchemaStore:
        """Load ``root/{vertical}/{type}.json``; every bad file is reported at once."""
        store = cls()
        if not root.exists():
            return store
        problems: list[str] = []
        for path in sorted(root.glob("*/*.json")):
            vertical, type_ = path.parent.name, path.stem
            if not (IDENTIFIER.match(vertical) and IDENTIFIER.match(type_)):
                problems.append(f"{path}: vertical/type must match {IDENTIFIER.pattern}")
                continue
            try:
                store.put(vertical, type_, orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError) as exc:
                problems.append(f"{path}: {exc}")
            except SchemaError as exc:
                problems.append(f"{path}: not a valid JSON Schema: {exc.message}")
        if problems:
            raise ConfigError("bad schema files: " + "; ".join(problems))
        return store
