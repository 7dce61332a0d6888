"""Incremental readers of CSV, NDJSON and JSON-array files, for ``qanat import``.

Each reader holds one record at a time (never the whole file), numbers the records from 1
in file order, and knows ``offset``, the bytes read so far. A resumed NDJSON read seeks to
the offset after the last record; CSV and JSON arrays skip the records before it (parsing
them is cheap), and their ``offset`` only drives the progress bar.

>>> import io
>>> reader = CsvReader(io.BytesIO(b"id,title\\n1,Lamp\\n2,Desk\\n"), ReadOptions())
>>> [(row.number, row.line, row.obj) for row in reader.rows()]
[(1, 2, {'id': '1', 'title': 'Lamp'}), (2, 3, {'id': '2', 'title': 'Desk'})]
>>> reader.line
3
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Protocol

import ijson
import orjson

FORMATS = ("csv", "ndjson", "json")
_EXTENSIONS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json"}

UNPARSED: Any = object()
"""``Row.obj`` of a line that is not JSON: its bytes are published unchanged, so the
transform dead-letters it with the parser's reason."""


class FileFormatError(ValueError):
    """The file cannot be read on (e.g. a JSON array broken in the middle)."""


@dataclass(frozen=True)
class Position:
    """Where a read starts: after record ``number``, which ended on ``line``, at byte ``offset``."""

    number: int = 0
    line: int = 0
    offset: int = 0


class Row(NamedTuple):
    """One record of the file."""

    number: int
    """Its position among the file's records, from 1 (the same on every run)."""
    line: int
    """The line it starts on (0 inside a JSON array, where lines mean little)."""
    obj: Any
    """The parsed record (a dict for CSV), or :data:`UNPARSED`."""
    raw: bytes | None
    """The file's bytes of the record, when they may be published unchanged (NDJSON)."""
    error: str | None = None
    """Why the record cannot be published at all; it is reported with its line instead."""
    end: int = 0
    """NDJSON: the byte offset just after the record, where a resumed read starts."""


@dataclass(frozen=True)
class ReadOptions:
    """How to read the file (every field has a CLI option and a setting)."""

    delimiter: str = ","
    encoding: str = "utf-8"
    json_items: str = "item"
    max_record_bytes: int = 1_000_000


class CsvRows(Protocol):
    """The csv module's reader (``_csv.reader``, which typeshed does not export)."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class Reader(Protocol):
    line: int

    @property
    def offset(self) -> int: ...

    def rows(self) -> Iterator[Row]: ...


def detect_format(name: str) -> str:
    """The format of a file name's extension (``.csv``, ``.ndjson``, ``.jsonl``, ``.json``),
    else ValueError.

    >>> detect_format("exports/products.jsonl")
    'ndjson'
    """
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot >= 0 else ""
    if extension not in _EXTENSIONS:
        raise ValueError(
            f"cannot tell the format of {name!r} from its extension: pass --format "
            f"({', '.join(FORMATS)})"
        )
    return _EXTENSIONS[extension]


class CsvReader:
    """A CSV file with a header line; each row becomes ``{header: cell}`` (strings).

    Quoted cells may span lines. A row whose number of cells differs from the header's is
    reported (``Row.error``), never guessed at. The rows are parsed by the csv module's C
    reader straight from a text stream; a resumed read skips the rows before its start
    (parsing them is cheap; a byte offset would cost a Python step per line).
    """

    def __init__(self, raw: IO[bytes], options: ReadOptions, start: Position = Position()):
        self.raw = raw
        self.options = options
        self.line = 0
        encoding = "utf-8-sig" if options.encoding.lower() in ("utf-8", "utf8") else None
        # Undecodable bytes survive as surrogates; serializing the row then reports it.
        self._text = io.TextIOWrapper(
            raw, encoding or options.encoding, errors="surrogateescape", newline=""
        )
        # A cell may be as long as a record may be (the csv module's default is 128 KiB).
        csv.field_size_limit(max(csv.field_size_limit(), options.max_record_bytes))
        self._reader = csv.reader(self._text, delimiter=options.delimiter)
        header = next(self._reader, None)
        if not header:
            raise FileFormatError("the CSV file has no header line")
        self.line = self._reader.line_num
        self.header = header
        self._skip = start.number
        self.skipped = 0

    @property
    def offset(self) -> int:
        """Bytes read so far (ahead of the last row by at most the text layer's buffer)."""
        return self.raw.tell()

    def resume(self) -> CsvRows:
        """The csv module's reader, past the records before the start: the import's CSV
        fast path (:mod:`sources.files.csvfast`) reads the rows' cells from it, and their
        lines from its ``line_num``; its records are numbered from ``skipped + 1``."""
        reader, skipped = self._reader, 0
        while skipped < self._skip:
            try:
                cells: list[str] | None = next(reader, None)
            except csv.Error:  # an unreadable row was a record too (reported)
                cells = ["unreadable"]
            if cells is None:
                break
            skipped += 1 if cells else 0
        self.line = reader.line_num
        self.skipped = skipped
        return reader

    def rows(self) -> Iterator[Row]:
        reader, header, width = self._reader, self.header, len(self.header)
        number = 0
        while True:
            error = None
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a cell over the field size limit
                cells, error = None, f"unreadable CSV row: {exc}"
            line = self.line + 1
            self.line = reader.line_num
            if cells == []:  # a blank line
                continue
            number += 1
            if number <= self._skip:
                continue
            if cells is not None and len(cells) != width:
                error = f"expected {width} cells (as in the header), got {len(cells)}"
            if error is not None:
                yield Row(number, line, None, None, error)
            else:
                yield Row(number, line, dict(zip(header, cells or (), strict=False)), None)


class NdjsonReader:
    """One JSON value per line; a line that is not JSON goes on as its bytes."""

    def __init__(self, raw: IO[bytes], options: ReadOptions, start: Position = Position()):
        self.raw = raw
        self.options = options
        self.offset = start.offset
        self.line = start.line
        raw.seek(start.offset)

    def rows(self) -> Iterator[Row]:
        limit = self.options.max_record_bytes
        readline, loads = self.raw.readline, orjson.loads
        while True:
            line = readline(limit + 2)
            if not line:
                return
            self.line += 1
            if len(line) > limit + 1:  # longer than the limit: skipped without being held
                self.offset += self._skip_rest(line)
                error = f"the line is over {limit} bytes"
                yield Row(self.line, self.line, None, None, error, self.offset)
                continue
            self.offset += len(line)
            text = line.strip()
            if not text:
                continue
            try:
                obj = loads(text)
            except orjson.JSONDecodeError:
                obj = UNPARSED
            yield Row(self.line, self.line, obj, text, None, self.offset)

    def _skip_rest(self, line: bytes) -> int:
        """Read on to the end of the line that began with ``line``; its size in bytes."""
        size = len(line)
        while not line.endswith(b"\n"):
            line = self.raw.readline(1 << 20)
            if not line:
                break
            size += len(line)
        return size


class JsonArrayReader:
    """The items of a JSON array (``json_items`` is the ijson prefix: ``item`` for a
    top-level array, ``records.item`` for ``{"records": [...]}``), parsed as a stream."""

    def __init__(self, raw: IO[bytes], options: ReadOptions, start: Position = Position()):
        self.raw = raw
        self.options = options
        self.line = 0
        self._skip = start.number

    @property
    def offset(self) -> int:
        """Bytes read so far (ahead of the last record by at most ijson's buffer)."""
        return self.raw.tell()

    def rows(self) -> Iterator[Row]:
        items = ijson.items(self.raw, self.options.json_items, use_float=True)
        number = 0
        try:
            for obj in items:
                number += 1
                if number > self._skip:
                    yield Row(number, 0, obj, None)
        except ijson.JSONError as exc:
            raise FileFormatError(
                f"not valid JSON after record {number} (near byte {self.raw.tell()}): {exc}"
            ) from None


def open_reader(fmt: str, raw: IO[bytes], options: ReadOptions, start: Position) -> Reader:
    readers: dict[str, type[CsvReader | NdjsonReader | JsonArrayReader]] = {
        "csv": CsvReader,
        "ndjson": NdjsonReader,
        "json": JsonArrayReader,
    }
    return readers[fmt](raw, options, start)
