"""The schema registry on the real broker: versions, idempotence, errors, live following."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import ConfigError
from pipelines.transform.registry import (
    InvalidSchemaError,
    SchemaFollower,
    SchemaRegistry,
    follow_schemas,
)
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.schematopic import schema_key
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

V1 = {"type": "object", "properties": {"price": {"type": "number"}}}
V2 = {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}


@pytest.fixture
def registry(kafka: KafkaSettings) -> Iterator[SchemaRegistry]:
    registry = SchemaRegistry(kafka)
    yield registry
    registry.close()


def test_register_versions_latest_get_and_list(
    kafka: KafkaSettings, registry: SchemaRegistry
) -> None:
    assert registry.latest("shop", "product") is None
    assert registry.register("shop", "product", V1) == 1
    assert registry.register("shop", "product", V2) == 2
    assert registry.register("shop", "review", V1) == 1
    latest = registry.latest("shop", "product")
    assert latest is not None
    assert (latest.version, latest.schema) == (2, V2)
    assert latest.registered_at.endswith("Z")
    first = registry.get("shop", "product", 1)
    assert first is not None
    assert first.schema == V1
    assert registry.get("shop", "product", 3) is None
    assert [(s.vertical, s.type, s.version) for s in registry.list()] == [
        ("shop", "product", 2),
        ("shop", "review", 1),
    ]

    # Another reader (a new process) sees the same, from the topic alone.
    other = SchemaRegistry(kafka)
    try:
        assert other.versions("shop", "product") == [1, 2]
        again = other.latest("shop", "product")
        assert again is not None
        assert again.to_json() == latest.to_json()
    finally:
        other.close()

    # Every proposal is its own key, so compaction keeps it; the value is the whole entry.
    landed = consume(kafka, kafka.topics.schemas, 3, timeout=10, settle=0.2)
    assert sorted((m.key or b"").rsplit(b"/", 1)[0] for m in landed) == [
        schema_key("shop", "product", 1).encode(),
        schema_key("shop", "product", 2).encode(),
        schema_key("shop", "review", 1).encode(),
    ]
    value = orjson.loads(landed[0].value or b"")
    assert set(value) == {"vertical", "type", "version", "schema", "registered_at"}


def test_identical_schema_keeps_the_version_and_writes_nothing(
    kafka: KafkaSettings, registry: SchemaRegistry
) -> None:
    assert registry.put("shop", "product", V1) == (1, True)
    reordered = {"properties": {"price": {"type": "number"}}, "type": "object"}
    assert registry.put("shop", "product", reordered) == (1, False)
    # 1 and true are equal in Python but not in JSON: that is a new version.
    assert registry.register("shop", "flag", {"const": 1}) == 1
    assert registry.register("shop", "flag", {"const": True}) == 2
    assert len(consume(kafka, kafka.topics.schemas, 3, timeout=10, settle=0.5)) == 3


def test_invalid_schema_reports_every_error_with_its_path(registry: SchemaRegistry) -> None:
    bad = {"type": "no-such", "required": "name", "properties": {"a": {"minimum": "x"}}}
    with pytest.raises(InvalidSchemaError) as caught:
        registry.register("shop", "product", bad)
    assert [e["path"] for e in caught.value.errors] == [
        "$.properties.a.minimum",
        "$.required",
        "$.type",
    ]
    assert all(e["message"] for e in caught.value.errors)
    with pytest.raises(InvalidSchemaError):
        registry.register("shop", "product", [1])
    assert registry.latest("shop", "product") is None
    with pytest.raises(ValueError, match="vertical"):
        registry.register("Shop", "product", V1)


def test_follower_sees_a_new_version_within_seconds(
    kafka: KafkaSettings, registry: SchemaRegistry
) -> None:
    registry.register("shop", "product", V1)
    store = SchemaStore()
    follower = SchemaFollower(kafka, store).start()
    try:
        assert store.version("shop", "product") == 1  # start() waits for what exists
        assert store.validate("shop", "product", {"name": "x"}) == (1, [])
        registry.register("shop", "product", V2)
        deadline = time.monotonic() + 5
        while store.version("shop", "product") != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        version, errors = store.validate("shop", "product", {"name": "x"})
        assert version == 2
        assert [e["path"] for e in errors] == ["$"]
    finally:
        follower.stop()


def test_seed_directory_registers_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "product.json").write_bytes(orjson.dumps(V2))
    store, follower = follow_schemas(kafka, tmp_path)
    follower.stop()
    assert store.version("shop", "product") == 1
    store, follower = follow_schemas(kafka, tmp_path)  # a second replica, same files
    follower.stop()
    assert store.version("shop", "product") == 1
    assert len(consume(kafka, kafka.topics.schemas, 1, timeout=10, settle=0.5)) == 1

    (tmp_path / "shop" / "bad.json").write_text('{"type": 5}')
    (tmp_path / "Nope").mkdir()
    (tmp_path / "Nope" / "x.json").write_text("{}")
    registry = SchemaRegistry(kafka)
    try:
        with pytest.raises(ConfigError) as caught:
            registry.seed(tmp_path)
    finally:
        registry.close()
    assert "bad.json" in str(caught.value)
    assert "Nope" in str(caught.value)
