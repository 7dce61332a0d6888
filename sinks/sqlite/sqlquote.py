"""SQLite identifiers in SQL text: every sink, store and reader over SQLite quotes table and
index names with :func:`quote_identifier` (values always go through ``?``).

>>> quote_identifier('a"b')
'"a""b"'
"""

from __future__ import annotations


def quote_identifier(identifier: str) -> str:
    """``identifier`` in double quotes, a double quote inside doubled (settings already
    restrict names to [A-Za-z0-9_]; this keeps any other name inert)."""
    return '"' + identifier.replace('"', '""') + '"'
