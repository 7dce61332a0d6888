"""Undecodable values, alone: which bodies the HTTP source refuses, and where it says the
problem is (sources/http/values.py). The routes' use of it, on the real broker, is in
tests/sources/http/test_values_routes.py."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sources.http.errors import ApiError
from sources.http.values import check_values, diagnose, problem_of, suspect


@pytest.mark.parametrize(
    "number",
    [b"1e400", b"-1e400", b"1.5e309", b"1E+400", b"1e0400", b"9" * 400, b"-" + b"9" * 309,
     b"1" + b"0" * 300 + b"e9", b"1.7976931348623159e308"],
)  # fmt: skip
def test_numbers_beyond_a_float_are_found_with_their_path(number: bytes) -> None:
    problem = diagnose(b'{"a": {"b": [true, ' + number + b"]}}")
    assert problem is not None
    assert (problem.code, problem.path) == ("number_out_of_range", "a.b.1")
    assert problem.text.startswith(number[:20].decode())


@pytest.mark.parametrize(
    "number",
    [b"1e308", b"1.7976931348623157e308", b"-1e-400", b"0." + b"0" * 400 + b"1e400", b"9" * 300,
     b"123456789012345678901234567890", b"1e99"],
)  # fmt: skip
def test_numbers_a_float_holds_are_fine(number: bytes) -> None:
    assert diagnose(b'{"a": ' + number + b"}") is None
    check_values(b'{"a": ' + number + b"}")


@pytest.mark.parametrize(
    ("body", "path", "offset"),
    [
        (b'{"name": "caf\xe9"}', "name", 13),
        (b'{"a": [1, {"b": "x\xc0\xaf"}]}', "a.1.b", 18),
        (b'{"n\xffame": 1}', "n\\xffame", 3),
        (b'{"s": "\xed\xa0\x80"}', "s", 7),  # a UTF-16 surrogate, encoded
        (b'"\xf5\x80\x80\x80"', "", 1),  # beyond U+10FFFF
        (b"not json \xe9", "", 9),
    ],
)
def test_invalid_utf8_is_found_with_its_field_and_byte(body: bytes, path: str, offset: int) -> None:
    problem = diagnose(body)
    assert problem is not None
    assert (problem.code, problem.path, problem.offset) == ("invalid_utf8", path, offset)


def test_the_first_problem_in_document_order_is_reported() -> None:
    problem = diagnose(b'{"a": {"b": 1e400}, "c": 1e500}')
    assert problem is not None and problem.path == "a.b"
    problem = diagnose(b'{"a": 1e400, "a": 2}')  # a duplicate key keeps it
    assert problem is not None and problem.path == "a"


def test_a_value_orjson_takes_has_no_problem() -> None:
    assert problem_of(b'{"name": "caf\xc3\xa9", "n": 1e308, "e": "1e999"}') is None
    assert problem_of(b'{"n": 1e999}') is not None


def test_the_cheap_check_lets_ordinary_bodies_through() -> None:
    assert not suspect(b'{"records": [{"name": "caf\xc3\xa9", "price": 1.5e10, "id": 12345}]}')
    assert suspect(b'{"a": "caf\xe9"}')
    assert suspect(b'{"a": 1e100}')  # maybe too large: looked at closely, then fine
    assert suspect(b'{"a": ' + b"1" * 210 + b"}")
    check_values(b'{"a": 1e100, "s": "E999"}', [b"1e100"], "body.a")


def test_the_error_names_the_record_field_and_byte_of_the_body() -> None:
    body = b'{"records": [{"a": 1}, {"a": 1}, {"b": "x\xff"}]}'
    values = [b'{"a": 1}', b'{"a": 1}', b'{"b": "x\xff"}']
    with pytest.raises(ApiError) as caught:
        check_values(body, values, "body.records")
    error = caught.value
    assert (error.status, error.code, error.location) == (400, "invalid_utf8", "body.records.2.b")
    assert error.details == [{"path": "body.records.2.b", "byte_offset": body.index(b"\xff")}]
    assert "byte 41" in error.message
    orjson.dumps(error.message_body())  # printable: the bad byte is shown in hex


def test_a_problem_outside_the_records_is_named_from_the_body() -> None:
    with pytest.raises(ApiError) as caught:
        check_values(b'{"records": [], "x": -1e400}', [], "body.records")
    assert (caught.value.code, caught.value.location) == ("number_out_of_range", "body.x")
    assert caught.value.details == [{"path": "body.x", "value": "-1e400"}]


def test_a_huge_number_is_quoted_shortened() -> None:
    problem = diagnose(b"[" + b"9" * 5000 + b"]")
    assert problem is not None and problem.path == "0"
    assert len(problem.text) < 80 and "5000 characters" in problem.text


def test_too_deep_or_broken_json_is_left_to_the_json_checks() -> None:
    assert diagnose(b"[" * 5000 + b"1e400" + b"]" * 5000) is None
    assert diagnose(b'{"a": 1e400') is None
    assert diagnose(b'{"a": NaN}') is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_every_json_orjson_writes_passes(value: object) -> None:
    body = orjson.dumps(value)
    assert problem_of(body) is None
    check_values(body)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_diagnosis(data: bytes) -> None:
    problem = diagnose(data)
    try:
        data.decode()
    except UnicodeDecodeError:
        assert problem is not None and problem.code == "invalid_utf8"
