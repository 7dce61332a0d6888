"""The PostgreSQL side of :mod:`sinks.progress`: the table, the one statement a batch adds
its progress with, and the reader's sum.

The statement locks the batch's stored progress rows (``FOR UPDATE``: under READ COMMITTED
it waits for, and then sees, a concurrent writer's count), counts each group's offsets
(sent as runs of consecutive offsets) above the stored ``last_offset`` and adds them, all
in the upsert's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from sinks.progress import Progress, progress_table


def identifier(schema: str, table: str) -> sql.Identifier:
    """The progress table of records table ``schema.table``."""
    return sql.Identifier(schema, progress_table(table))


def ddl(schema: str, table: str) -> list[sql.Composed]:
    """The statement that creates the progress table, if missing."""
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (ingestion_id text NOT NULL, kafka_topic text NOT NULL,"
            " kafka_partition integer NOT NULL, last_offset bigint NOT NULL,"
            " handled bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (ingestion_id, kafka_topic, kafka_partition))"
        ).format(identifier(schema, table))
    ]


def add_sql(schema: str, table: str) -> sql.Composed:
    """Adds a batch's progress: parameters from :func:`add_params` (binary: a long array
    goes out several times faster than as text)."""
    return sql.SQL(
        "WITH groups AS (SELECT * FROM unnest(%b::text[], %b::text[], %b::int4[])"
        " WITH ORDINALITY AS g(ingestion_id, kafka_topic, kafka_partition, g)),"
        " stored AS (SELECT g.g, p.last_offset FROM groups g JOIN {table} p"
        " ON (p.ingestion_id, p.kafka_topic, p.kafka_partition)"
        " = (g.ingestion_id, g.kafka_topic, g.kafka_partition) FOR UPDATE OF p),"
        " counted AS (SELECT g.ingestion_id, g.kafka_topic, g.kafka_partition,"
        " max(r.last) AS last_offset,"
        " sum(greatest(r.last - greatest(r.first, coalesce(s.last_offset, -1) + 1) + 1, 0))"
        " AS handled FROM unnest(%b::int8[], %b::int8[], %b::int8[]) AS r(g, first, last)"
        " JOIN groups g USING (g) LEFT JOIN stored s USING (g)"
        " GROUP BY g.g, g.ingestion_id, g.kafka_topic, g.kafka_partition)"
        " INSERT INTO {table} AS t (ingestion_id, kafka_topic, kafka_partition, last_offset,"
        " handled) SELECT ingestion_id, kafka_topic, kafka_partition, last_offset, handled"
        " FROM counted WHERE handled > 0"
        " ON CONFLICT (ingestion_id, kafka_topic, kafka_partition) DO UPDATE SET"
        " last_offset = greatest(t.last_offset, EXCLUDED.last_offset),"
        " handled = t.handled + EXCLUDED.handled, updated_at = now()"
    ).format(table=identifier(schema, table))


def add_params(progress: Sequence[Progress]) -> list[Any]:
    """The arrays :func:`add_sql` unnests: the groups' keys, then every run of offsets
    with the number of its group (from 1, as ``WITH ORDINALITY`` numbers the groups)."""
    numbers: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for number, group in enumerate(progress, 1):
        numbers += [number] * len(group.runs)
        firsts += [first for first, _last in group.runs]
        lasts += [last for _first, last in group.runs]
    ids = [group.ingestion_id for group in progress]
    topics = [group.kafka_topic for group in progress]
    partitions = [group.kafka_partition for group in progress]
    return [ids, topics, partitions, numbers, firsts, lasts]


def handled_sql(schema: str, table: str) -> sql.Composed:
    """What a reader asks: the records an ingestion's rows handled, over every partition."""
    return sql.SQL("SELECT COALESCE(SUM(handled), 0) AS n FROM {} WHERE ingestion_id = %s").format(
        identifier(schema, table)
    )
