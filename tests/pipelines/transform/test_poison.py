"""Events that once stopped the transform for good (issue 16): each is now one dead letter
with its stage and reason, and the next event goes through. Pure logic: the Transformer
does no I/O (tests/reliability/test_hostile_events.py runs them on the real broker)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipelines.core.deadletter import fit_dead_letter, message_size
from pipelines.core.records import MAX_NESTING_DEPTH, RawMeta
from pipelines.core.topics import H_ERROR_DETAILS, H_ERROR_TRUNCATED, decode_headers
from pipelines.transform.lanes import REASON_CODES
from pipelines.transform.schemas import SchemaStore
from pipelines.transform.transformer import Routed, Transformer

META = RawMeta("shop", "item", "http", "ing-1", "ev-1", "2026-01-02T03:04:05.000000Z")


def _process(transformer: Transformer, value: bytes, offset: int = 0) -> Routed:
    return transformer.process(value, b"k", META.headers(), "qanat.raw", 0, offset)


def _error(routed: Routed) -> dict[str, Any]:
    assert routed.dead
    return decode_headers(routed.headers)


def _nested(depth: int) -> bytes:
    return b'{"name": "deep", "v": ' + b"[" * depth + b"]" * depth + b"}"


def test_nesting_deeper_than_the_limit_is_a_parse_dead_letter_with_its_path() -> None:
    transformer = Transformer(SchemaStore())
    headers = _error(_process(transformer, _nested(500)))
    assert (headers["qanat.error.stage"], headers["qanat.error.reason"]) == (
        "parse",
        f"nested deeper than {MAX_NESTING_DEPTH} levels",
    )
    assert orjson.loads(headers[H_ERROR_DETAILS])[0]["path"].startswith("$.v.0.0")
    assert not _process(transformer, b'{"name": "next"}', 1).dead


def test_nesting_at_the_limit_is_a_record() -> None:
    routed = _process(Transformer(SchemaStore()), _nested(MAX_NESTING_DEPTH - 1))
    assert not routed.dead, routed.headers
    assert orjson.loads(routed.payload or b"")["name"] == "deep"


def test_a_normalized_record_over_the_records_topic_limit_is_a_dead_letter() -> None:
    # 9e15 becomes 9000000000000000.0: the record outgrows the event that carried it
    body = b'{"name": "n", "v": [' + b",".join([b"9e15"] * 2000) + b"]}"
    transformer = Transformer(SchemaStore(), max_record_bytes=len(body) + 2048)
    routed = _process(transformer, body)
    headers = _error(routed)
    assert headers["qanat.error.stage"] == "normalize"
    assert headers["qanat.error.reason"] == "normalized record too large"
    assert routed.payload == body  # the original bytes, for replay once the limit is raised
    assert not _process(transformer, b'{"name": "small"}', 1).dead


def test_a_record_orjson_cannot_write_is_a_dead_letter() -> None:
    class Store(SchemaStore):
        def validate(self, vertical: str, type_: str, obj: Any) -> Any:
            obj["huge"] = 2**70  # what no JSON event carries, but a bug might make
            return None, []

    headers = _error(_process(Transformer(Store()), b'{"name": "x", "source_id": "s"}'))
    assert headers["qanat.error.reason"] == "record cannot be serialized"
    assert "64-bit" in headers[H_ERROR_DETAILS]


def test_a_dead_letter_over_the_dlq_limit_keeps_its_headers_and_a_truncated_value() -> None:
    transformer = Transformer(SchemaStore(), max_dead_letter_bytes=4096)
    body = b'{"name": ' + b'"' + b"x" * 20_000 + b'"'  # not JSON: no closing brace
    routed = _process(transformer, body)
    headers = _error(routed)
    assert headers["qanat.error.stage"] == "parse"
    assert headers[H_ERROR_TRUNCATED] == str(len(body))
    assert routed.payload is not None and body.startswith(routed.payload)
    assert message_size(routed.key, routed.payload, routed.headers) <= 4096


def test_fit_dead_letter_leaves_a_letter_that_fits_alone() -> None:
    headers = [(H_ERROR_DETAILS, b"[]")]
    assert fit_dead_letter(b"k", b"v", headers, 4096) == (b"v", headers)


def test_fit_dead_letter_cuts_details_before_the_value() -> None:
    details = orjson.dumps([{"path": "$", "message": "m" * 3000}])
    value, headers = fit_dead_letter(None, b"v" * 500, [(H_ERROR_DETAILS, details)], 2048)
    assert value == b"v" * 500
    assert H_ERROR_TRUNCATED not in dict(headers)
    assert b"left out" in dict(headers)[H_ERROR_DETAILS]


@pytest.mark.parametrize("code", ["too_deep", "not_serializable", "record_too_large"])
def test_the_new_reasons_are_counted_codes(code: str) -> None:
    assert any(code in codes for codes in REASON_CODES.values())
