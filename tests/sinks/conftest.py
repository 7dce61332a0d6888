"""Fixtures of the sink tests: a real PostgreSQL server, and a table per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from sinks.progress import progress_table


@pytest.fixture(scope="session")
def pg_dsn(postgres_dsn: str) -> str:
    """The test PostgreSQL server, found as tests/conftest.py says."""
    return postgres_dsn


@pytest.fixture
def pg_table(pg_dsn: str) -> Iterator[str]:
    """A unique table name in the public schema; the table is dropped afterwards."""
    name = f"records_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in (name, progress_table(name)):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("public", table)))
