"""Thousands of generated hostile events (tests/reliability/hostile.py) produced to the
raw topic of a real broker, through the real transform, the real PostgreSQL and SQLite
sinks and the errors sink, as processes: every event ends stored (in each sink) or
dead-lettered, never both, never lost; no stage exits; the errors table holds every dead
letter. A row of RELIABILITY.md records the run (QANAT_HOSTILE_EVENTS, _SEED to vary)."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from pipelines.core.config import KafkaSettings
from pipelines.core.topics import H_ERROR_REASON, H_ERROR_STAGE, H_EVENT_ID, ensure_topics
from pipelines.dlq.filters import DlqFilter
from pipelines.dlq.read import DlqScanner
from tests.reliability.hostile import HostileEvent, generate
from tests.reliability.results import ScenarioResult, record_result
from tests.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
COUNT = int(os.environ.get("QANAT_HOSTILE_EVENTS", "3000"))
SEED = int(os.environ.get("QANAT_HOSTILE_SEED", "16"))
SINKS = ("postgres", "sqlite")


def _produce(kafka: KafkaSettings, events: list[HostileEvent]) -> None:
    producer = Producer(kafka.client(**{"linger.ms": 20}))
    for event in events:
        while True:
            try:
                producer.produce(
                    kafka.topics.raw, event.value, event.event_id.encode(), headers=event.headers
                )
                break
            except BufferError:
                producer.poll(0.2)
    assert producer.flush(60) == 0


def _dead_letters(kafka: KafkaSettings) -> list[tuple[str, str, str]]:
    """(event id, stage, reason) of every dead letter."""
    with DlqScanner(kafka) as scanner:
        return [
            (
                letter.fields.get(H_EVENT_ID, "?"),
                letter.fields.get(H_ERROR_STAGE, "?"),
                letter.fields.get(H_ERROR_REASON, "?"),
            )
            for letter in scanner.scan(scanner.ranges(DlqFilter()))
        ]


def _sqlite_column(path: Path, query: str) -> list[str]:
    try:
        with sqlite3.connect(path, timeout=10) as conn:
            return [row[0] for row in conn.execute(query)]
    except sqlite3.OperationalError:  # the sink has not created its table yet
        return []


def _stored(dsn: str, table: str, sqlite_path: Path) -> dict[str, list[str]]:
    query = sql.SQL("SELECT event_id FROM {}").format(sql.Identifier(table))
    try:
        with psycopg.connect(dsn) as conn:
            pg = [row[0] for row in conn.execute(query)]
    except psycopg.errors.UndefinedTable:
        pg = []
    lite = _sqlite_column(sqlite_path, "SELECT event_id FROM records")
    return {"postgres": pg, "sqlite": lite}


def _unsettled(
    sent: set[str], stored: dict[str, list[str]], letters: list[tuple[str, str, str]]
) -> list[str]:
    """Every event accounted for: dead-lettered by the transform, or, in each sink, stored
    or dead-lettered by it (a sink's dead letter carries the event's headers)."""
    transform_dead = {e for e, stage, _ in letters if stage != "sink"}
    sink_dead = Counter(e for e, stage, _ in letters if stage == "sink")
    kept = {name: set(stored[name]) for name in SINKS}
    return [
        event_id
        for event_id in sorted(sent - transform_dead)
        if sum(event_id in kept[name] for name in SINKS) + sink_dead[event_id] < len(SINKS)
    ]


def test_hostile_events_end_stored_or_dead_lettered_and_no_stage_exits(
    services: Services,
    kafka_bootstrap: str,
    postgres_dsn: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    started = time.monotonic()
    prefix = f"hostile{uuid.uuid4().hex[:10]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    ensure_topics(kafka.client(), kafka.topics, 2, 1)
    table = f"records_{uuid.uuid4().hex[:10]}"
    sqlite_path = tmp_path / "qanat.db"
    services.env.update(
        {
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "QANAT_KAFKA_TOPIC_PREFIX": prefix,
            "QANAT_KAFKA_PARTITIONS": "2",
            "QANAT_OPS_PORT": "0",
            "QANAT_TRANSFORM_SCHEMA_DIR": str(tmp_path / "no-schemas"),
            "QANAT_SQLITE_PATH": str(sqlite_path),
            "QANAT_POSTGRES_DSN": postgres_dsn,
            "QANAT_POSTGRES_TABLE": table,
        }
    )
    for name, args in {
        "transform": ("transform",),
        "sink-postgres": ("sink", "postgres"),
        "sink-sqlite": ("sink", "sqlite"),
        "sink-errors": ("sink", "errors", "sqlite"),
    }.items():
        services.start(name, *args)

    events = generate(SEED, COUNT)
    sent = {event.event_id for event in events}
    _produce(kafka, events)

    kinds = {event.event_id: event.kind for event in events}
    deadline = time.monotonic() + 240
    while True:
        services.check_alive()  # no stage may exit, at any point
        letters = _dead_letters(kafka)
        stored = _stored(postgres_dsn, table, sqlite_path)
        missing = _unsettled(sent, stored, letters)
        if not missing:
            break
        where = {e: [n for n in SINKS if e in stored[n]] for e in missing[:10]}
        unsettled = [(e, kinds[e], where[e]) for e in missing[:10]]
        assert time.monotonic() < deadline, (
            f"{len(missing)} unsettled, e.g. {unsettled}\n{services.log_tails()}"
        )
        time.sleep(2)
    errors_deadline = time.monotonic() + 60
    while len(_sqlite_column(sqlite_path, "SELECT dlq_offset FROM record_errors")) < len(letters):
        services.check_alive()
        assert time.monotonic() < errors_deadline, f"errors table short\n{services.log_tails()}"
        time.sleep(1)
    services.check_alive()

    transform_dead = {e for e, stage, _ in letters if stage != "sink"}
    internal = [(kinds.get(e), r) for e, _s, r in letters if r.startswith("internal error")]
    for name in SINKS:
        rows = stored[name]
        assert len(rows) == len(set(rows)), f"{name}: an event stored twice"
        assert not set(rows) & transform_dead, f"{name}: stored and dead-lettered"
        assert set(rows) <= sent
    assert not internal, f"a bug, not a bad event: {internal[:5]}"
    assert {"plain"} <= {kinds[e] for e in stored["postgres"]}  # the good ones got through
    outcome = Counter(kinds[e] for e in transform_dead if e in kinds)
    print(f"\nhostile events: {len(events)} sent, dead-lettered by kind {dict(outcome)}")

    result = ScenarioResult(
        scenario="hostile events",
        sent=len(events),
        accepted=len(events),
        stored=len(stored["postgres"]),
        dead_lettered=len(letters),
        lost=0,
        duplicated=0,
        server_errors=0,
        seed=SEED,
        seconds=round(time.monotonic() - started, 1),
    )
    record_result(result)
    request.config._qanat_reliability_ran = True  # type: ignore[attr-defined]
