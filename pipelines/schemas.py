"""JSON Schemas per vertical/type, and validation with every error's JSON path.

A schema describes the object a client sends (before normalization), so each error's
path points into the client's own payload. Schemas are JSON Schema draft 2020-12.
For now they are read from a directory laid out as ``{vertical}/{type}.json``.

Two validators per schema: a compiled one (jsonschema-rs) answers "valid?" on the hot
path, and jsonschema, the reference, explains every error of an invalid record. A record
is only ever rejected on jsonschema's word; a schema the compiled validator cannot take
is checked by jsonschema alone. tests/pipelines/test_schemas_differential.py checks that
the two agree.

>>> store = SchemaStore({("shop", "product"): {"type": "object", "required": ["price"]}})
>>> store.validate("shop", "product", {"name": "x"})[1][0]["message"]
"'price' is a required property"
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from pipelines.errors import ConfigError
from pipelines.records import IDENTIFIER

logger = logging.getLogger(__name__)
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


# Where the two validators' verdicts differ (found by the differential test), jsonschema
# alone decides: multipleOf on large floats, and regex classes and flags, which follow
# Unicode in Python's re but ECMA-262 in jsonschema-rs (e.g. "\\w" and "²").
REFERENCE_ONLY_KEYWORDS = frozenset({"multipleOf"})
_DISPUTED_REGEX = re.compile(r"\\[wWdDsSbBpP]|\(\?")


def _reference_only(schema: Any) -> bool:
    """Whether ``schema`` uses a construct on which the validators may disagree."""
    if isinstance(schema, list):
        return any(_reference_only(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in REFERENCE_ONLY_KEYWORDS:
            return True
        if key == "pattern" and isinstance(value, str) and _DISPUTED_REGEX.search(value):
            return True
        disputed_names = key == "patternProperties" and isinstance(value, dict)
        if disputed_names and any(_DISPUTED_REGEX.search(name) for name in value):
            return True
        if _reference_only(value):
            return True
    return False


def compiled_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """jsonschema-rs's ``is_valid`` for ``schema``, or None where jsonschema must decide alone.

    ``format`` stays an annotation, as in jsonschema by default; no remote ``$ref`` is
    fetched, as jsonschema fetches none.
    """
    if _reference_only(schema):
        return None
    try:
        validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        logger.warning("schema checked by jsonschema alone (no compiled validator): %s", exc)
        return None
    return validator.is_valid


@dataclass
class _Entry:
    version: int
    validator: Draft202012Validator
    fast_check: Callable[[Any], bool] | None


class SchemaStore:
    """Validators for the registered schemas; a vertical/type without one is schemaless."""

    def __init__(self, schemas: dict[SchemaKey, dict[str, Any]] | None = None) -> None:
        self._entries: dict[SchemaKey, _Entry] = {}
        for (vertical, type_), schema in (schemas or {}).items():
            self.put(vertical, type_, schema)

    def put(self, vertical: str, type_: str, schema: dict[str, Any], version: int = 1) -> None:
        """Register a schema; raises SchemaError with the meta-schema's reason if invalid."""
        Draft202012Validator.check_schema(schema)
        self._entries[(vertical, type_)] = _Entry(
            version, Draft202012Validator(schema), compiled_check(schema)
        )

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
        if entry.fast_check is not None and entry.fast_check(obj):
            return entry.version, []
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
