"""Directory-loaded schemas and validation errors with JSON paths."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipelines.core.errors import ConfigError
from pipelines.transform.schemas import SchemaStore, json_path

PRODUCT = {
    "type": "object",
    "required": ["name", "price"],
    "properties": {
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_json_path() -> None:
    assert json_path([]) == "$"
    assert json_path(["a", 0, "b"]) == "$.a[0].b"
    assert json_path(["a b"]) == '$["a b"]'


def test_every_error_is_reported_with_its_path() -> None:
    store = SchemaStore({("shop", "product"): PRODUCT})
    version, errors = store.validate("shop", "product", {"price": -1, "tags": ["ok", 3]})
    assert version == 1
    assert [(e["path"], e["validator"]) for e in errors] == [
        ("$", "required"),
        ("$.price", "minimum"),
        ("$.tags[1]", "type"),
    ]


def test_schemaless_type_is_accepted() -> None:
    assert SchemaStore().validate("shop", "product", {"anything": 1}) == (None, [])


def test_loads_a_directory(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "product.json").write_bytes(orjson.dumps(PRODUCT))
    store = SchemaStore.from_directory(tmp_path)
    assert ("shop", "product") in store
    assert len(store) == 1


def test_every_bad_schema_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "broken.json").write_text("{not json")
    (tmp_path / "shop" / "wrong.json").write_text('{"type": "no-such-type"}')
    (tmp_path / "Bad").mkdir()
    (tmp_path / "Bad" / "x.json").write_text("{}")
    with pytest.raises(ConfigError) as caught:
        SchemaStore.from_directory(tmp_path)
    message = str(caught.value)
    assert "broken.json" in message
    assert "wrong.json" in message
    assert "Bad/x.json" in message


def test_project_example_schemas_load() -> None:
    root = Path(__file__).resolve().parents[3] / "schemas"
    assert len(SchemaStore.from_directory(root)) >= 1
