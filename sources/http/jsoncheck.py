"""What a JSON body's decoders let through, refused at the door: nesting deeper than
:data:`pipelines.core.records.MAX_NESTING_DEPTH` (400 ``too_deep``), a key twice in one object
(400 ``duplicate_key``: the decoders would silently keep the last copy) and more records
than a request may carry (413 ``too_many_records``, counted before they are built). Each
error names where, as a dotted location (``body.records.3.tags``).

Every check has a cheap first step that clears almost every body, in C:

- depth: a value cannot nest deeper than its count of ``[`` and ``{``; past that, the
  bytes are reduced to their brackets outside strings (escapes dropped, then every string
  without a bracket in it) and peeled a level at a time (:func:`nesting_depth`);
- duplicates: the body decoded by orjson and encoded again has as many ``:`` as the body
  exactly when no member was dropped (a key twice), unless a string spells ``:`` as
  ``\\u003a`` (then the slow check runs);
- the record count: the array is split into its elements' bytes by a msgspec struct of
  ``max_records`` fields, which stops at the first element beyond.

Only a body that fails a first step is walked in Python to find the path.

>>> nesting_depth(b'{"a": "[[[[", "b": [[1], {"c": []}]}')
4
>>> duplicate_path(b'{"records": [{"name": "a", "n": 1, "name": "b"}]}')
['records', '0', 'name']
>>> try:
...     check_unique(b'{"a": {"b": 1, "b": 2}}', "body", {"a": {"b": 2}})
... except ApiError as exc:
...     print(exc.code, exc.location)
duplicate_key body.a.b
"""

from __future__ import annotations

# The stdlib decoder, read-only: of the JSON decoders only it hands over an object's
# members with duplicates kept (to name the duplicate); nothing is serialized with it.
import json  # noqa: TID251
import re
from array import array
from collections.abc import Iterator
from functools import cache
from itertools import accumulate
from typing import Any

import msgspec
import orjson

from pipelines.core.records import MAX_NESTING_DEPTH
from sources.http.errors import ApiError

_NOT_SHAPE = bytes(b for b in range(256) if b not in b'"[]{}:,')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # +1 and -1 as signed bytes
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")
_PEELS = 8  # levels removed by bytes.replace before the linear count takes over


class Shape:
    """One pass over a JSON value's bytes, for every check: its quotes, brackets (all as
    ``[`` and ``]``), colons and commas, in order."""

    __slots__ = ("data", "marks")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.marks = data.translate(_SQUARE, _NOT_SHAPE)

    def colons(self) -> int:
        """Every ``:``, in strings too."""
        return self.marks.count(b":")

    def values_bound(self) -> int:
        """More than the number of values (and keys) a decoder would build."""
        marks = self.marks
        return marks.count(b",") + marks.count(b":") + marks.count(b"[") + 1

    def depth(self, limit: int | None = None) -> int:
        """How deep the value nests arrays and objects (a scalar: 0), exact for valid
        JSON. With ``limit``, any answer above it means "deeper than ``limit``" (and may
        be cheaper to get)."""
        marks = self.marks
        opens = marks.count(b"[")
        if opens <= (limit or 0):
            return opens  # brackets in strings count too: an upper bound
        data = self.data
        if b"\\" in data:  # an escaped backslash, then an escaped quote, delimits nothing
            data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
            marks = data.translate(_SQUARE, _NOT_SHAPE)
        # The quotes now alternate open/close. A run of them is a stretch with no bracket:
        # dropping a pair keeps every bracket on its side of the strings' edges, and most
        # strings go (those without a bracket in them).
        marks = marks.translate(None, b":,").replace(b'""', b"")
        if b'"' in marks:  # a string holds brackets: keep what lies outside the strings
            marks = b"".join(marks.split(b'"')[::2])
        peeled = 0
        while marks and peeled < _PEELS:  # each pass removes every innermost pair: a level
            inner = marks.replace(b"[]", b"")
            if len(inner) == len(marks):  # not JSON
                break
            marks, peeled = inner, peeled + 1
        if not marks:
            return peeled
        return peeled + max(accumulate(array("b", marks.translate(_STEPS))), default=0)


def nesting_depth(data: bytes, limit: int | None = None) -> int:
    """:meth:`Shape.depth` of ``data``: a scan of its bytes, so no depth can exhaust a
    stack."""
    return Shape(data).depth(limit)


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


def _tokens(data: bytes) -> Iterator[bytes]:
    for match in _TOKEN.finditer(data):
        yield match.group()


def deep_path(data: bytes, limit: int) -> list[str] | None:
    """The path (keys and indexes from the top) of the first array or object nested
    deeper than ``limit`` in ``data``, or None; a walk of its tokens in Python, for a
    body :func:`nesting_depth` found too deep."""
    # Per open container: whether it is an object, and the key or index at hand.
    stack: list[list[Any]] = []
    for token in _tokens(data):
        first = token[:1]
        if first in b"[{":
            if len(stack) == limit:
                return [str(position) for _object, position in stack]
            stack.append([first == b"{", None if first == b"{" else 0])
        elif first in b"]}":
            if stack:
                stack.pop()
        elif not stack:
            continue
        elif first == b",":
            top = stack[-1]
            top[1] = None if top[0] else top[1] + 1
        elif first == b'"' and stack[-1][0] and stack[-1][1] is None:
            stack[-1][1] = _key_text(token)
    return None


def _key_text(token: bytes) -> str:
    try:
        return str(orjson.loads(token))
    except orjson.JSONDecodeError:
        return token[1:-1].decode(errors="backslashreplace")


def too_deep_path(data: bytes, limit: int, shape: Shape | None = None) -> list[str] | None:
    """The path of the first array or object nested deeper than ``limit`` in ``data``
    (``shape``: its :class:`Shape`, if made already), or None (also for a body that is
    not JSON: its decoder says what is wrong)."""
    if (shape or Shape(data)).depth(limit) <= limit:
        return None
    return deep_path(data, limit)


def check_depth(data: bytes, where: str, levels_above: int = 0, shape: Shape | None = None) -> None:
    """A 400 ``too_deep`` naming the first array or object of a record nested deeper
    than :data:`~pipelines.core.records.MAX_NESTING_DEPTH`; ``levels_above``: how deep in
    ``data`` (named ``where``) the records are (a batch body: 2, an array of records: 1)."""
    path = too_deep_path(data, MAX_NESTING_DEPTH + levels_above, shape)
    if path is not None:
        raise too_deep_error(".".join([where, *path]))


def json_path(path: list[str]) -> str:
    """``$.a.0``, as :func:`pipelines.core.records.too_deep` names a place in a value."""
    return ".".join(["$", *path])


def too_deep_error(location: str) -> ApiError:
    message = f"{location} is nested deeper than {MAX_NESTING_DEPTH} levels"
    return ApiError(400, "too_deep", message, location, [{"path": location}])


class _Found(list[str]):
    """The path to a duplicate key, from the object that holds it down to the key."""


def _marked(value: Any) -> _Found | None:
    if isinstance(value, _Found):
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _marked(item)
            if found is not None:
                return _Found([str(index), *found])
    return None


def duplicate_path(data: bytes) -> list[str] | None:
    """The path to the first key found twice in one object of ``data`` (valid JSON,
    nested at most :data:`~pipelines.core.records.MAX_NESTING_DEPTH` deep), or None. Slow, but
    it keeps no decoded object: each one is checked and dropped."""
    seen = False

    def members(pairs: list[tuple[str, Any]]) -> _Found | None:
        nonlocal seen
        if seen:  # a duplicate below: carry its path up
            for key, value in pairs:
                found = _marked(value)
                if found is not None:
                    return _Found([key, *found])
        keys = {key for key, _value in pairs}
        if len(keys) == len(pairs):
            return None
        names: set[str] = set()
        for key, _value in pairs:
            if key in names:
                seen = True
                return _Found([key])
            names.add(key)
        return None

    try:
        decoded = json.loads(data, object_pairs_hook=members)
    except (ValueError, RecursionError):
        return None
    return _marked(decoded)


def duplicate_error(location: str, key: str) -> ApiError:
    message = f"the key {key!r} appears twice in one object, at {location}"
    return ApiError(400, "duplicate_key", message, location, [{"path": location}])


def has_duplicates(data: bytes, decoded: Any, shape: Shape | None = None) -> bool | None:
    """Whether some object of ``data`` (``decoded`` is its orjson value) has a key twice:
    what orjson drops (each copy but the last) takes its ``:`` with it. None: ``data``
    spells a colon as an escape, so the count cannot tell."""
    if b"\\u003" in data and _ESCAPED_COLON.search(data):
        return None
    return (shape or Shape(data)).colons() != orjson.dumps(decoded).count(b":")


def duplicate_key_path(data: bytes, decoded: Any, shape: Shape | None = None) -> list[str] | None:
    """The path to the first key found twice in one object of ``data`` (``decoded`` is
    its orjson value), or None."""
    if has_duplicates(data, decoded, shape) is False:
        return None
    return duplicate_path(data)


def check_unique(data: bytes, where: str, decoded: Any, shape: Shape | None = None) -> None:
    """A 400 ``duplicate_key`` naming the first key found twice in one object of
    ``data`` (named ``where``; ``decoded`` is its orjson value)."""
    path = duplicate_key_path(data, decoded, shape)
    if path is not None:
        raise duplicate_error(".".join([where, *path]), path[-1])


# At most this many values decoded at once (about 100 bytes each in Python), so a body
# of many tiny values is checked without holding it all as objects.
VALUE_BUDGET = 200_000


def decode_unique(data: bytes, where: str, shape: Shape | None = None) -> Any:
    """``data`` (valid JSON, depth checked) decoded by orjson, once no object of it has
    a key twice (else the 400); None when it has too many values to hold at once as
    objects (:data:`VALUE_BUDGET`): then it is checked without being kept.
    ``orjson.JSONDecodeError`` for a value orjson refuses (see :mod:`sources.http.values`)."""
    shape = shape or Shape(data)
    if len(data) > VALUE_BUDGET and shape.values_bound() > VALUE_BUDGET:  # a value: a byte or more
        path = duplicate_path(data)
        if path is not None:
            raise duplicate_error(".".join([where, *path]), path[-1])
        return None
    decoded = orjson.loads(data)
    check_unique(data, where, decoded, shape)
    return decoded


# Up to this many records a request may carry, they are split by a struct with a field
# each (it stops at the first one beyond); past it, by a list, which holds them all.
STRUCT_MAX_RECORDS = 10_000
_LIST = msgspec.json.Decoder(list[msgspec.Raw])


@cache
def _bounded(max_records: int) -> msgspec.json.Decoder[Any]:
    """The decoder of an array of at most ``max_records`` elements (made once: a service
    makes it at start-up, :func:`prepare_split`)."""
    fields = [(f"e{i}", msgspec.Raw, msgspec.UNSET) for i in range(max_records)]
    elements = msgspec.defstruct("Elements", fields, array_like=True, forbid_unknown_fields=True)
    return msgspec.json.Decoder(elements)


def prepare_split(max_records: int) -> None:
    """Make the decoder :func:`split_array` will use for ``max_records``."""
    if max_records <= STRUCT_MAX_RECORDS:
        _bounded(max_records)


def split_array(array_: msgspec.Raw | bytes, max_records: int, location: str) -> list[bytes]:
    """The exact bytes of each element of a JSON array (already known to be valid JSON),
    counted before they are built: 413 ``too_many_records`` beyond ``max_records``, 422 if
    it is not an array."""
    field = location.rpartition(".")[2]
    is_array = bytes(memoryview(array_)[:1]) == b"["
    if not is_array:
        code = f"invalid_{field}" if field != "body" else "invalid_body"
        raise ApiError(422, code, f"{field} must be a list", location)
    if max_records > STRUCT_MAX_RECORDS:
        elements: tuple[Any, ...] = tuple(_LIST.decode(array_))
        if len(elements) > max_records:
            raise too_many_records(max_records, location, len(elements))
    else:
        try:
            elements = msgspec.structs.astuple(_bounded(max_records).decode(array_))
        except msgspec.ValidationError:  # an array: only its length can be wrong
            raise too_many_records(max_records, location) from None
    try:
        count = elements.index(msgspec.UNSET)
    except ValueError:
        count = len(elements)
    return [bytes(element) for element in elements[:count]]


def too_many_records(max_records: int, location: str, count: int | None = None) -> ApiError:
    counted = f"{count} records" if count is not None else f"more than {max_records} records"
    return ApiError(
        413, "too_many_records", f"{counted}, at most {max_records} per request", location
    )
