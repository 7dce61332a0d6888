"""Column mapping and casts: turn a row of a file or a table into a record object.

A mapping names, for a record field, the column it comes from (``name: title`` makes the
``title`` column the record's ``name``); casts turn a text cell into a number, a boolean or
JSON (an empty cell becomes null; a cell that does not parse stays text, so a schema can
dead-letter the record with its reason rather than the value being lost).

>>> shaper = RecordShaper({"name": "title", "source_id": "id"}, {"price": "float"})
>>> shaper.shape({"id": "7", "title": "Lamp", "price": "9.5"})
{'price': 9.5, 'source_id': '7', 'name': 'Lamp'}
>>> shaper.shape({"id": "8", "title": "Desk", "price": "n/a"})["price"]
'n/a'

A CSV file's rows are lists of cells, all under one header: :meth:`RecordShaper.row_builder`
compiles the mapping and casts for that header into one function from cells to record.

>>> build = shaper.row_builder(["id", "title", "price"])
>>> build(["7", "Lamp", "9.5"])
{'source_id': '7', 'name': 'Lamp', 'price': 9.5}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

Cast = Literal["str", "int", "float", "bool", "json"]
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


_CASTS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "json": orjson.loads,
}


def cast_value(kind: str, value: Any) -> Any:
    """``value`` (a text cell) as ``kind``; non-text values and failures are kept as they are.

    >>> cast_value("int", "42"), cast_value("bool", "yes"), cast_value("float", "")
    (42, True, None)
    """
    if not isinstance(value, str) or kind == "str":
        return value
    if not value.strip():
        return None
    try:
        return _CASTS[kind](value)
    except (ValueError, orjson.JSONDecodeError):
        return value


def _fast_cast(kind: str) -> Callable[[str], Any]:
    """:func:`cast_value` for a text cell, the common case (the cell parses) first."""
    parse = _CASTS[kind]

    def cast(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:  # orjson.JSONDecodeError is one too
            return cast_value(kind, text)

    return cast


RowBuilder = Callable[[list[str]], dict[str, Any]]


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """``["name=title", ...]`` as a dict; ValueError naming the bad pair.

    >>> parse_pairs(["name=title", "source_id=id"], "--map")
    {'name': 'title', 'source_id': 'id'}
    """
    parsed: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ValueError(f"{what} {pair!r}: expected FIELD=COLUMN")
        parsed[target.strip()] = source.strip()
    return parsed


class RecordShaper:
    """Applies one mapping (field -> column) and casts (field -> kind) to row objects."""

    def __init__(self, mapping: Mapping[str, str], casts: Mapping[str, str]) -> None:
        unknown = sorted(set(casts.values()) - set(_CASTS))
        if unknown:
            raise ValueError(f"unknown cast(s) {unknown}; choose from {sorted(_CASTS)}")
        self.rename = {column: target for target, column in mapping.items()}
        self.casts = dict(casts)

    @property
    def changes_rows(self) -> bool:
        return bool(self.rename or self.casts)

    def shape(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with its columns renamed and cast; a mapped column wins over a column
        that already had the field's name."""
        if self.rename:
            rename = self.rename
            mapped = {rename[key]: obj[key] for key in obj if key in rename}
            obj = {key: value for key, value in obj.items() if key not in rename} | mapped
        for field, kind in self.casts.items():
            if field in obj:
                obj[field] = cast_value(kind, obj[field])
        return obj

    def columns(self, header: Sequence[str]) -> dict[str, int]:
        """Record field -> the index of the header's column it comes from, in the order the
        fields first appear (renamed) in the header; a mapped column wins over a column
        that already had the field's name, and of two columns with one name the last wins.

        >>> RecordShaper({"name": "title"}, {}).columns(["name", "id", "title", "id"])
        {'name': 2, 'id': 3}
        """
        mapped = {self.rename[name] for name in header if name in self.rename}
        columns: dict[str, int] = {}
        for index, name in enumerate(header):
            field = self.rename.get(name, name)
            if field in mapped and name not in self.rename:
                columns.setdefault(field, index)  # its place; the mapped column's cell
                continue
            columns[field] = index
        for index, name in enumerate(header):  # the mapped column's cell, in its field's place
            if name in self.rename:
                columns[self.rename[name]] = index
        return columns

    def row_builder(self, header: Sequence[str]) -> RowBuilder:
        """A function from a row's cells (as many as the header's) to its record object:
        :meth:`shape` of ``dict(zip(header, cells))``, compiled once for the header.

        It is generated as Python source, ``return {k0: c[2], k1: f1(c[0]), ...}``, about
        twice as fast as building and then reshaping a dict: the names in the source are
        only generated ones (the header's names are values in its namespace).
        """
        namespace: dict[str, Any] = {}
        items = []
        for number, (field, index) in enumerate(self.columns(header).items()):
            namespace[f"k{number}"] = field
            cell = f"c[{index}]"
            kind = self.casts.get(field, "str")
            if kind != "str":
                namespace[f"f{number}"] = _fast_cast(kind)
                cell = f"f{number}({cell})"
            items.append(f"k{number}: {cell}")
        source = f"def build(c):\n    return {{{', '.join(items)}}}\n"
        exec(compile(source, "<qanat import: row builder>", "exec"), namespace)
        build: RowBuilder = namespace["build"]
        return build
