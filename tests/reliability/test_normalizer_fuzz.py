"""The normalizer under hypothesis: any JSON value, and objects built from the contract's
own fields with any values, either normalize into a record that serializes, or raise the
documented InvalidRecordError (to the DLQ with a reason) - never anything else."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.core.errors import InvalidRecordError
from pipelines.core.records import RawMeta, normalize

META = RawMeta("shop", "product", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")
FIELDS = (
    "name",
    "title",
    "source_id",
    "idempotency_key",
    "vertical_data",
    "event_time",
    "timestamp",
    "date",
    "body",
    "type",
    "entity",
    "source",
)
# What orjson.loads (the transform's parser) can produce: 64-bit integers, finite floats.
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = (
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
times = (
    st.datetimes().map(lambda d: d.isoformat())
    | INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["2026-13-40T25:61:61Z", "", "now", "1e309", "-0", "T", "2026-01-01"])
)
contract_objects = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=5),
    json_values | times,
    max_size=8,
)


def _check(obj: Any) -> None:
    try:
        record = normalize(obj, META, max_name_length=64)
    except InvalidRecordError as exc:
        assert str(exc)
        return
    orjson.dumps(record)
    assert record["vertical"] == "shop" and isinstance(record["name"], str)
    assert isinstance(record["source_id"], str) and record["source_id"]
    assert isinstance(record["event_time"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_is_a_record_or_an_invalid_record_error(obj: Any) -> None:
    _check(obj)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contract_objects)
def test_contract_fields_with_any_values_never_raise_anything_else(obj: dict[str, Any]) -> None:
    _check(obj)
