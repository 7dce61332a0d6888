"""The SQLite side of :mod:`sinks.progress`: the table, how a batch adds its progress, and
the reader's sum.

SQLite has one writer at a time, so the counts are computed here, inside the upsert's
transaction: read each group's stored ``last_offset``, count the offsets above it, add.

>>> import sqlite3
>>> from sinks.progress import Progress
>>> conn = sqlite3.connect(":memory:")
>>> for statement in ddl("records"):
...     _ = conn.execute(statement)
>>> progress = SQLiteProgress("records")
>>> progress.add(conn, [Progress("i1", "qanat.records", 0, [(0, 2)])], "2026-01-01T00:00:00Z")
>>> progress.add(conn, [Progress("i1", "qanat.records", 0, [(1, 4)])], "2026-01-01T00:00:01Z")
>>> conn.execute(handled_sql("records"), ("i1",)).fetchone()  # offsets 0-4: 5, once each
(5,)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sinks.progress import Progress, progress_table
from sinks.sqlite.sqlquote import quote_identifier as _q


def ddl(table: str) -> list[str]:
    """The statement that creates the progress table of ``table``, if missing."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {_q(progress_table(table))} (
            ingestion_id TEXT NOT NULL,
            kafka_topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL,
            last_offset INTEGER NOT NULL,
            handled INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (ingestion_id, kafka_topic, kafka_partition)
        )"""
    ]


class SQLiteProgress:
    """Adds a batch's progress on a SQLite connection, in the caller's transaction."""

    def __init__(self, table: str) -> None:
        name = _q(progress_table(table))
        self._select = (
            f"SELECT last_offset FROM {name} "
            "WHERE ingestion_id = ? AND kafka_topic = ? AND kafka_partition = ?"
        )
        self._upsert = (
            f"INSERT INTO {name} (ingestion_id, kafka_topic, kafka_partition, last_offset, "
            "handled, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (ingestion_id, kafka_topic, kafka_partition) DO UPDATE SET "
            "last_offset = max(last_offset, excluded.last_offset), "
            "handled = handled + excluded.handled, updated_at = excluded.updated_at"
        )

    def add(self, conn: sqlite3.Connection, progress: Sequence[Progress], updated_at: str) -> None:
        params: list[tuple[Any, ...]] = []
        for group in progress:
            found = conn.execute(self._select, group[:3]).fetchone()
            handled = group.counted_after(None if found is None else found[0])
            if handled:
                params.append((*group[:3], group.last_offset, handled, updated_at))
        if params:
            conn.executemany(self._upsert, params)


def handled_sql(table: str) -> str:
    """What a reader asks: the records an ingestion's rows handled, over every partition."""
    return (
        f"SELECT COALESCE(SUM(handled), 0) FROM {_q(progress_table(table))} WHERE ingestion_id = ?"
    )
