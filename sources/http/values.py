"""Values no consumer can decode: invalid UTF-8, and numbers beyond a 64-bit float.

The transform decodes every record with orjson, which refuses text that is not UTF-8 and
numbers a 64-bit float cannot hold (``1e400``, ``-1e400``, an integer of 400 digits): such a
record could only be dead-lettered. The HTTP source refuses it at the door instead, with a
400 ``invalid_utf8`` or ``number_out_of_range`` naming the record, the field and, for
UTF-8, the byte offset in the body.

Batch elements are split as the client's exact bytes without being decoded
(:mod:`sources.http.body`), so :func:`check_values` has a cheap first step: the whole body
is decoded as UTF-8 once, and searched for a number that might be too large (an exponent
of three digits or more, or a run of 210 digits), about 2 µs per kB; only a body that
fails it has its records decoded one by one to find the culprit.

>>> check_values(b'{"records": [{"price": 1e10}]}', [b'{"price": 1e10}'], "body.records")
>>> body = b'[{"a": "ok"}, {"b": [1, -1e400]}]'
>>> try:
...     check_values(body, [b'{"a": "ok"}', b'{"b": [1, -1e400]}'], "body")
... except ApiError as exc:
...     print(exc.code, exc.location)
number_out_of_range body.1.b.1
>>> diagnose(b'{"name": "caf\\xe9"}')
ValueProblem(code='invalid_utf8', path='name', offset=13, text='e9')
"""

from __future__ import annotations

# The stdlib decoder, read-only: of the JSON decoders only it has hooks for each number and
# object (to name the culprit); nothing is serialized with it.
import json  # noqa: TID251
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sources.http.errors import ApiError

# Overflowing a float takes an exponent of 100 or more (e, E or e+, then three digits or
# more), or, with a smaller one, more than 308 - 99 digits before the point. With every
# digit made 0, e, E and + made e, and any other byte a space, either leaves a mark that a
# byte-string search finds (several times faster than a regular expression).
_MARKS = bytes(
    ord("0") if char in "0123456789" else ord("e") if char in "eE+" else ord(" ")
    for char in map(chr, range(256))
)
_EXPONENT, _DIGITS = b"e000", b"0" * 210
_LARGEST = "about ±1.8e308"
_SHOWN = 40  # characters of a huge number quoted back


@dataclass(frozen=True)
class ValueProblem:
    """What is wrong in one JSON value: ``path`` is the field inside it (dotted, array
    indexes as numbers; empty: the value itself), ``offset`` the byte of invalid UTF-8
    in it, ``text`` the number as sent or the invalid bytes in hex."""

    code: str
    path: str
    offset: int | None
    text: str

    def location(self, where: str) -> str:
        return f"{where}.{self.path}" if self.path else where

    def message(self, where: str, base: int = 0, whole: str = "body") -> str:
        """Why, ``where`` naming the value and ``base`` its first byte in the ``whole``."""
        if self.offset is None:
            return f"the number {self.text} at {where} is beyond a 64-bit float ({_LARGEST})"
        return (
            f"invalid UTF-8 at byte {base + self.offset} of the {whole} (0x{self.text}), in {where}"
        )

    def error(self, where: str, base: int = 0) -> ApiError:
        """The 400 for this problem in the value at location ``where`` (e.g.
        ``body.records.3``), which starts at byte ``base`` of the body."""
        location = self.location(where)
        detail: dict[str, Any] = {"path": location}
        if self.offset is None:
            detail["value"] = self.text
        else:
            detail["byte_offset"] = base + self.offset
        return ApiError(400, self.code, self.message(location, base), location, [detail])


def suspect(body: bytes) -> bool:
    """False when ``body`` is UTF-8 and holds no number that might be too large; cheap."""
    try:
        body.decode()
    except UnicodeDecodeError:
        return True
    marks = body.translate(_MARKS)
    return _EXPONENT in marks or _DIGITS in marks


def check_values(body: bytes, values: Sequence[bytes] = (), where: str = "body") -> None:
    """Raise the 400 of the first problem of ``body``: in the array elements ``values``
    (as split from it), named ``where.0``, ``where.1``, ...; else anywhere in the body
    (a single record: pass no ``values``), named from ``body`` down."""
    if not suspect(body):
        return
    start = 0
    for index, value in enumerate(values):
        start = body.find(value, start)
        problem = problem_of(value)
        if problem is not None:
            raise problem.error(f"{where}.{index}", max(start, 0))
        start += len(value)
    problem = problem_of(body)
    if problem is not None:
        raise problem.error("body")


def problem_of(value: bytes) -> ValueProblem | None:
    """The value's problem, None when orjson (what the transform decodes with) takes it."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return diagnose(value)
    return None


class _OutOfRange(str):
    """A number too large for a float, as sent."""


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept."""


def _number(text: str) -> Any:
    return _OutOfRange(text) if math.isinf(float(text)) else 0


def diagnose(data: bytes) -> ValueProblem | None:
    """The first invalid UTF-8 or out-of-range number of a JSON value, with its field;
    None when it has neither (or is not JSON and has valid UTF-8). Slow (it builds the
    value in Python): for values known to be suspect."""
    try:
        text, bad = data.decode(), None
    except UnicodeDecodeError as exc:
        text, bad = data.decode(errors="surrogateescape"), exc
    try:
        parsed = json.loads(text, parse_float=_number, parse_int=_number, object_pairs_hook=_Pairs)
        path, found = _find(parsed, utf8=bad is not None)
    except (ValueError, RecursionError):
        path, found = "", None
    if bad is not None:
        return ValueProblem("invalid_utf8", path, bad.start, data[bad.start : bad.end].hex())
    if found is None:
        return None
    shown = found if len(found) <= _SHOWN else f"{found[:_SHOWN]}... ({len(found)} characters)"
    return ValueProblem("number_out_of_range", path, None, shown)


def _find(value: Any, utf8: bool) -> tuple[str, str | None]:
    """Depth first, in document order: the path to the first undecodable text (``utf8``:
    a field name or a string) or out-of-range number, and that text."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Pairs):
            for name, item in reversed(node):
                stack += [((*path, name), item), ((*path, name), name)]  # the name first
        elif isinstance(node, list):
            stack.extend(((*path, str(i)), item) for i, item in reversed(list(enumerate(node))))
        elif isinstance(node, _OutOfRange):
            if not utf8:
                return _dotted(path), str(node)
        elif isinstance(node, str) and utf8 and _undecodable(node):
            return _dotted(path), node
    return "", None


def _undecodable(text: str) -> bool:
    """Whether ``text`` holds bytes that ``surrogateescape`` kept from invalid UTF-8."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _dotted(path: Sequence[str]) -> str:
    """The path as printable text (invalid bytes of a field name as ``\\xNN``)."""
    names = (
        name.encode(errors="surrogateescape").decode(errors="backslashreplace") for name in path
    )
    return ".".join(names)
