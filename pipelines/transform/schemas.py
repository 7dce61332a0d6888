"""JSON Schemas per vertical/type, and validation with every error's JSON path.

A schema describes the object a client sends (before normalization), so each error's
path points into the client's own payload. Schemas are JSON Schema draft 2020-12.
They are versioned in the registry (pipelines/transform/registry.py, the compacted schemas topic),
which a :class:`SchemaStore` follows live; a directory ``{vertical}/{type}.json`` seeds it.

Two validators per schema: a compiled one (jsonschema-rs) answers "valid?" on the hot
path and, for an invalid record, lists every error with its path; jsonschema, the
reference, decides alone for a schema the compiled validator cannot take or may judge
differently, and explains the errors where the two would report them differently (see
:func:`compiled_details`). tests/pipelines/transform/test_schemas_differential.py checks that the
two agree on every verdict and on every error's path and keyword.

>>> store = SchemaStore({("shop", "product"): {"type": "object", "required": ["price"]}})
>>> store.validate("shop", "product", {"name": "x"})[1][0]["message"]
'"price" is a required property'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator

from pipelines.core.errors import ConfigError
from pipelines.core.records import IDENTIFIER

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


def _sort_key(path: Iterable[str | int], keyword: str) -> tuple[list[str], str]:
    return list(map(str, path)), keyword


def _reference_errors(validator: Draft202012Validator, obj: Any) -> list[dict[str, Any]]:
    errors = sorted(validator.iter_errors(obj), key=lambda e: _sort_key(e.path, str(e.validator)))
    return [
        {
            "path": json_path(error.absolute_path),
            "message": error.message,
            "validator": str(error.validator),
            "schema_path": "/".join(str(p) for p in error.absolute_schema_path),
        }
        for error in errors
    ]


def _keyword(schema_path: list[str | int]) -> str:
    return str(schema_path[-1]) if schema_path else ""


def _compiled_errors(validator: jsonschema_rs.Validator, obj: Any) -> list[dict[str, Any]]:
    errors = list(validator.iter_errors(obj))
    if len(errors) > 1:
        errors.sort(key=lambda e: _sort_key(e.instance_path, _keyword(e.schema_path)))
    return [
        {
            "path": json_path(error.instance_path),
            "message": error.message,
            "validator": _keyword(error.schema_path),
            "schema_path": "/".join(map(str, error.schema_path)),
        }
        for error in errors
    ]


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


def compiled_validator(schema: dict[str, Any]) -> jsonschema_rs.Validator | None:
    """jsonschema-rs's validator for ``schema``, or None where jsonschema must decide alone.

    ``format`` stays an annotation, as in jsonschema by default; no remote ``$ref`` is
    fetched, as jsonschema fetches none.
    """
    if _reference_only(schema):
        return None
    try:
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        logger.warning("schema checked by jsonschema alone (no compiled validator): %s", exc)
        return None


def compiled_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """The compiled ``is_valid`` for ``schema``, or None where jsonschema decides alone."""
    validator = compiled_validator(schema)
    return None if validator is None else validator.is_valid


# Where the compiled validator reports an error at another path or under another keyword
# than jsonschema (found by the differential test), jsonschema explains the errors: the
# tuple and `contains` keywords, and a `false` subschema other than additionalProperties'.
REFERENCE_DETAIL_KEYWORDS = frozenset({"prefixItems", "contains", "minContains", "maxContains"})
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def _reference_details(schema: Any) -> bool:
    """Whether jsonschema, not the compiled validator, lists ``schema``'s errors."""
    if schema is False:
        return True
    if isinstance(schema, list):
        return any(_reference_details(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in REFERENCE_DETAIL_KEYWORDS:
            return True
        if key in _DATA_KEYWORDS or (key == "additionalProperties" and value is False):
            continue
        if _reference_details(value):
            return True
    return False


_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def schema_errors(schema: Any) -> list[dict[str, str]]:
    """Every reason ``schema`` is not a draft 2020-12 JSON Schema object, sorted by path.

    Each error's ``path`` points into the schema document itself.

    >>> schema_errors({"type": "object"})
    []
    >>> [e["path"] for e in schema_errors({"type": "no-such", "required": "name"})]
    ['$.required', '$.type']
    """
    if not isinstance(schema, dict):
        return [{"path": "$", "message": "a schema must be a JSON object"}]
    errors = sorted(
        _META_VALIDATOR.iter_errors(schema), key=lambda e: list(map(str, e.absolute_path))
    )
    return [{"path": json_path(error.absolute_path), "message": error.message} for error in errors]


class _Entry:
    """One schema version's validators; ``errors`` is only asked about invalid records."""

    __slots__ = ("details_compiled", "fast", "is_valid", "reference", "version")

    def __init__(self, schema: dict[str, Any], version: int) -> None:
        self.version = version
        self.reference = Draft202012Validator(schema)
        self.fast = compiled_validator(schema)
        self.details_compiled = self.fast is not None and not _reference_details(schema)
        self.is_valid: Callable[[Any], bool] = (
            self.reference.is_valid if self.fast is None else self.fast.is_valid
        )

    def errors(self, obj: Any) -> list[dict[str, Any]]:
        if self.details_compiled:
            assert self.fast is not None
            return _compiled_errors(self.fast, obj)
        return _reference_errors(self.reference, obj)


class SchemaStore:
    """Validators for the registered schemas; a vertical/type without one is schemaless."""

    def __init__(self, schemas: dict[SchemaKey, dict[str, Any]] | None = None) -> None:
        self._entries: dict[SchemaKey, _Entry] = {}
        for (vertical, type_), schema in (schemas or {}).items():
            self.put(vertical, type_, schema)

    def put(self, vertical: str, type_: str, schema: dict[str, Any], version: int = 1) -> None:
        """Register a schema; raises SchemaError with the meta-schema's reason if invalid."""
        Draft202012Validator.check_schema(schema)
        self._entries[(vertical, type_)] = _Entry(schema, version)

    def version(self, vertical: str, type_: str) -> int | None:
        """The version in use for ``vertical``/``type_``, or None when schemaless."""
        entry = self._entries.get((vertical, type_))
        return None if entry is None else entry.version

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
        if entry.is_valid(obj):
            return entry.version, []
        return entry.version, entry.errors(obj)

    @classmethod
    def from_directory(cls, root: Path) -> SchemaStore:
        """Load ``root/{vertical}/{type}.json``; every bad file is reported at once."""
        return cls(read_schema_files(root))


def read_schema_files(root: Path) -> dict[SchemaKey, dict[str, Any]]:
    """Every ``root/{vertical}/{type}.json``, checked against the meta-schema.

    Raises one ConfigError naming every bad file and why; a missing ``root`` holds none.
    """
    found: dict[SchemaKey, dict[str, Any]] = {}
    problems: list[str] = []
    for path in sorted(root.glob("*/*.json")) if root.exists() else []:
        vertical, type_ = path.parent.name, path.stem
        if not (IDENTIFIER.fullmatch(vertical) and IDENTIFIER.fullmatch(type_)):
            problems.append(f"{path}: vertical/type must match {IDENTIFIER.pattern}")
            continue
        try:
            schema = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        errors = schema_errors(schema)
        if errors:
            reasons = ", ".join(f"{e['path']}: {e['message']}" for e in errors)
            problems.append(f"{path}: not a valid JSON Schema: {reasons}")
            continue
        found[(vertical, type_)] = schema
    if problems:
        raise ConfigError("bad schema files: " + "; ".join(problems))
    return found
