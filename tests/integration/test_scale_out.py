"""Scale-out: 2 transform replicas and 2 PostgreSQL sink replicas, as real processes, on
4-partition topics. One replica of each is killed (SIGKILL) in the middle of the load; the
survivors take over its partitions and, at the end, every entity is in PostgreSQL exactly
once, at its latest version. The surviving sink then stops on SIGTERM with status 0.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import ensure_topics
from sources.base import build_raw_events
from tests.services import Services

pytestmark = pytest.mark.integration
ENTITIES = 1500
CHUNKS = 6
# A killed consumer's partitions move to the survivor after its session times out:
# the broker's minimum (6 s) instead of librdkafka's 45 s keeps the test short.
FAST_FAILOVER = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


def _events(version: int, entities: range) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    values = [
        orjson.dumps(
            {
                "name": f"entity {n} v{version}",
                "source_id": f"e{n}",
                "version": version,
                "event_time": f"2026-01-0{version}T00:00:00Z",
            }
        )
        for n in entities
    ]
    _ingestion, events = build_raw_events(values, "fleet", "truck", "test")
    return [(event.key, event.value, event.headers) for event in events]


def _produce(
    kafka: KafkaSettings, events: list[tuple[str, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = Producer(kafka.client(**{"linger.ms": 10}))
    for key, value, headers in events:
        producer.produce(kafka.topics.raw, value, key, headers=headers)
    assert producer.flush(30) == 0


def _rows(dsn: str, table: str) -> list[tuple[str, str, int]]:
    query = sql.SQL(
        "SELECT source_id, name, (data->>'version')::int FROM {} WHERE vertical = 'fleet'"
    ).format(sql.Identifier(table))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return [(str(a), str(b), int(c)) for a, b, c in conn.execute(query).fetchall()]
    except psycopg.errors.UndefinedTable:
        return []


def _both_replicas_assigned(kafka: KafkaSettings, groups: list[str]) -> bool:
    """Each group has two members, each with partitions: both replicas do work."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.client())
    described = admin.describe_consumer_groups(groups, request_timeout=5)
    for future in described.values():
        members = future.result().members
        if len(members) != 2 or not all(m.assignment.topic_partitions for m in members):
            return False
    return True


def _wait(condition: object, services: Services, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        services.check_alive()
        assert time.monotonic() < deadline, f"{what}\n{services.log_tails()}"
        time.sleep(0.3)


def test_two_replicas_each_one_killed_every_record_once(
    kafka_bootstrap: str, postgres_dsn: str, services: Services, tmp_path: Path
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        partitions=4,
        client_config=FAST_FAILOVER,
    )
    ensure_topics(kafka.client(), kafka.topics, 4, 1)
    table = f"scale_{uuid.uuid4().hex[:10]}"
    (tmp_path / "no-schemas").mkdir()
    services.env |= {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_KAFKA_PARTITIONS": "4",
        "QANAT_KAFKA_CLIENT_CONFIG": orjson.dumps(FAST_FAILOVER).decode(),
        "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "no-schemas"),
        "QANAT_POSTGRES_DSN": postgres_dsn,
        "QANAT_POSTGRES_TABLE": table,
        "QANAT_OPS_PORT": "0",
    }
    for replica in ("1", "2"):
        services.start(f"transform-{replica}", "transform")
        services.start(f"sink-postgres-{replica}", "sink", "postgres")

    groups = [kafka.consumer_group("transform"), kafka.consumer_group("sink-postgres")]
    _wait(lambda: _both_replicas_assigned(kafka, groups), services, 60, "replicas not assigned")
    # Version 1 of every entity, then version 2, in chunks; the kill comes mid-way.
    versions = _events(1, range(ENTITIES)) + _events(2, range(ENTITIES))
    size = len(versions) // CHUNKS
    for index in range(CHUNKS):
        _produce(kafka, versions[index * size : (index + 1) * size])
        if index == 1:
            _wait(lambda: len(_rows(postgres_dsn, table)) > 0, services, 60, "nothing stored")
            for victim in ("transform-1", "sink-postgres-1"):
                services.processes.pop(victim).send_signal(signal.SIGKILL)
        time.sleep(0.5)

    def complete() -> bool:
        rows = _rows(postgres_dsn, table)
        return len(rows) == ENTITIES and all(version == 2 for _, _, version in rows)

    _wait(complete, services, 60, "not every entity reached version 2")
    rows = _rows(postgres_dsn, table)
    assert sorted(source_id for source_id, _, _ in rows) == sorted(f"e{n}" for n in range(ENTITIES))
    assert all(name.endswith(" v2") for _, name, _ in rows)

    sink = services.processes.pop("sink-postgres-2")
    sink.send_signal(signal.SIGTERM)
    assert sink.wait(30) == 0, services.log_tails()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
