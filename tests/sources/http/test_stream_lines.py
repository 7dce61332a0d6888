"""The NDJSON line splitter, alone: lines across chunk boundaries, over-long lines."""

from __future__ import annotations

import pytest

from sources.http.stream import LineSplitter

BODY = b'{"a": 1}\n\nnot json\r\n' + b"x" * 50 + b'\n{"b": 2}\n{"c": 3}'
EXPECTED = [(1, b'{"a": 1}'), (2, b""), (3, b"not json\r"), (4, None), (5, b'{"b": 2}')]


def split(chunks: list[bytes], max_line_bytes: int = 20) -> list[tuple[int, bytes | None]]:
    splitter = LineSplitter(max_line_bytes)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + list(splitter.end())


@pytest.mark.parametrize("size", [1, 2, 3, 7, 19, 20, 21, 64, len(BODY)])
def test_lines_are_the_same_whatever_the_chunking(size: int) -> None:
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert split(chunks) == [*EXPECTED, (6, b'{"c": 3}')]


def test_a_line_of_exactly_the_limit_is_kept_and_one_more_byte_is_not() -> None:
    assert split([b"a" * 20 + b"\n" + b"b" * 21 + b"\nc"]) == [(1, b"a" * 20), (2, None), (3, b"c")]
    assert split([b"a" * 10, b"a" * 10, b"\n"]) == [(1, b"a" * 20)]
    assert split([b"a" * 10, b"a" * 11, b"\n"]) == [(1, None)]


def test_an_over_long_line_is_reported_once_and_never_buffered() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    lines = []
    for _ in range(1000):
        lines += list(splitter.feed(b"y" * 100))
        assert len(splitter._partial) <= 10
    lines += list(splitter.feed(b'y\n{"ok": 1}\n'))
    assert lines == [(1, None), (2, b'{"ok": 1}')]
    assert list(splitter.end()) == []


def test_an_over_long_last_line_without_newline_is_not_emitted() -> None:
    assert split([b'{"a": 1}\n', b"z" * 30]) == [(1, b'{"a": 1}'), (2, None)]


def test_empty_body_and_lone_newlines() -> None:
    assert split([]) == []
    assert split([b"\n\n"]) == [(1, b""), (2, b"")]
