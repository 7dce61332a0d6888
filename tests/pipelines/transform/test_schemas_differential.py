"""The compiled validator (jsonschema-rs) and jsonschema agree on every verdict, and the
error details a SchemaStore gives (from the compiled validator where it can) have the
same paths and keywords as jsonschema's.

Generated records are checked against the project's example schemas and a set of tricky
schemas; a disagreement is a bug to fix in pipelines/transform/schemas.py (by sending that schema
construct to jsonschema alone), never a case to drop from this list.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipelines.transform.schemas import SchemaStore, compiled_check, json_path

ROOT = Path(__file__).resolve().parents[3]
KEYS = ["name", "price", "a", "b", "c", "tags", "kind", "n", "x-1", "é", "", "source_id"]

TRICKY: dict[str, dict[str, Any]] = {
    "combinators": {
        "anyOf": [{"type": "string"}, {"type": "object", "required": ["a"]}],
        "not": {"const": "forbidden"},
    },
    "one_of": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]},
    "if_then_else": {
        "type": "object",
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["a"]},
        "else": {"required": ["b"]},
    },
    "refs": {
        "$defs": {"pos": {"type": "number", "exclusiveMinimum": 0}},
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/pos"}, "tags": {"items": {"$ref": "#/$defs/pos"}}},
    },
    "closed": {
        "type": "object",
        "properties": {"a": {}},
        "patternProperties": {"^x-": {}},
        "additionalProperties": False,
    },
    "unevaluated": {
        "type": "object",
        "allOf": [{"properties": {"a": {}}}],
        "unevaluatedProperties": {"type": "integer"},
    },
    "tuples": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": False,
    },
    "contains": {
        "type": "array",
        "contains": {"type": "integer"},
        "minContains": 2,
        "maxContains": 3,
    },
    "dependencies": {
        "dependentRequired": {"a": ["b"]},
        "dependentSchemas": {"c": {"required": ["name"]}},
    },
    "numbers": {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "price": {"multipleOf": 0.01, "maximum": 1e6},
            "a": {"multipleOf": 3},
        },
    },
    "equality": {
        "type": "object",
        "properties": {
            "a": {"const": 1},
            "b": {"enum": [0, "0", None, [1], {"x": 1}]},
            "tags": {"uniqueItems": True},
        },
    },
    "strings": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 4},
            "a": {"pattern": "^[A-Z]{3}$"},
            "b": {"pattern": "[0-9]+"},
            "c": {"format": "email"},
        },
        "patternProperties": {"^x-[a-z]": {"type": "integer"}},
    },
    "unicode_classes": {
        "type": "object",
        "properties": {"b": {"pattern": "\\d+"}, "é": {"pattern": "^\\w+$"}},
        "patternProperties": {"(?i)^X": {"type": "integer"}},
    },
    "shape": {
        "type": "object",
        "propertyNames": {"maxLength": 3},
        "minProperties": 1,
        "maxProperties": 4,
    },
    "booleans": {"type": "object", "properties": {"a": True, "b": False}},
}


def _schemas() -> dict[str, dict[str, Any]]:
    found = {
        str(path.relative_to(ROOT)): orjson.loads(path.read_bytes())
        for path in sorted((ROOT / "schemas").glob("*/*.json"))
    }
    return found | TRICKY


SCHEMAS = _schemas()
REFERENCE_ONLY = {"numbers", "unicode_classes"}  # see pipelines.transform.schemas._reference_only
# Where jsonschema-rs reports an error elsewhere
# (see pipelines.transform.schemas._reference_details).
REFERENCE_DETAILS = REFERENCE_ONLY | {"tuples", "contains", "booleans"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([0, 1, 1.0, 0.0, -0.0, 3, 0.07, 0.3, 1e6, 10.5, 2**53 + 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(
        ["a", "AAA", "ABC", "abc", "12", "é", "😀😀", "e\u0301", "forbidden", "x@y.z", "0"]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6) | json_values


@cache
def _store(name: str) -> SchemaStore:
    return SchemaStore({("t", "s"): SCHEMAS[name]})


def _reference_details(name: str, record: Any) -> list[tuple[str, str]]:
    """jsonschema's (path, keyword) of every error, in SchemaStore's order."""
    errors = Draft202012Validator(SCHEMAS[name]).iter_errors(record)
    keyed = sorted(((list(map(str, e.path)), str(e.validator)), json_path(e.path)) for e in errors)
    return [(path, keyword) for (_, keyword), path in keyed]


@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - REFERENCE_ONLY))
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_compiled_and_reference_validators_agree(name: str, record: Any) -> None:
    fast = compiled_check(SCHEMAS[name])
    assert fast is not None, f"{name}: the compiled validator refused the schema"
    reference = Draft202012Validator(SCHEMAS[name]).is_valid(record)
    assert fast(record) == reference, f"{name}: {orjson.dumps(record)!r}"
    # The details a dead letter carries: jsonschema's paths and keywords, in its order.
    _version, details = _store(name).validate("t", "s", record)
    got = [(d["path"], d["validator"]) for d in details]
    assert got == _reference_details(name, record), f"{name}: {orjson.dumps(record)!r}"
    assert all(d["message"] and isinstance(d["schema_path"], str) for d in details)


@pytest.mark.parametrize("name", sorted(REFERENCE_ONLY))
def test_schemas_with_disputed_keywords_use_the_reference_alone(name: str) -> None:
    assert compiled_check(SCHEMAS[name]) is None


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_details_come_from_the_compiled_validator_where_it_agrees(name: str) -> None:
    entry = _store(name)._entries[("t", "s")]
    assert entry.details_compiled == (name not in REFERENCE_DETAILS)
