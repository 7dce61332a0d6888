"""``qanat db init`` and ``qanat records ls``: administering and reading the datastore
(SQLite or PostgreSQL) directly, without Kafka; registered by main."""

from __future__ import annotations

import sqlite3
from typing import Annotated

import orjson
import typer

from pipelines.cli.base import StoreArgument, fatal_errors
from pipelines.core.config import load
from pipelines.core.errors import FatalError

db_app = typer.Typer(help="Datastore administration.", no_args_is_help=True)
records_app = typer.Typer(help="Read stored records.", no_args_is_help=True)


@db_app.command("init")
@fatal_errors
def db_init(store: StoreArgument = "sqlite") -> None:
    """Create the tables and indexes of a store."""
    from sinks.errors import ErrorsSinkSettings

    errors = load(ErrorsSinkSettings)
    if store == "sqlite":
        from sinks.sqlite.errors import init_db as init_sqlite_errors
        from sinks.sqlite.sink import SQLiteSinkSettings
        from sinks.sqlite.sink import init_db as init_sqlite

        settings = load(SQLiteSinkSettings)
        init_sqlite(settings)
        init_sqlite_errors(settings, errors)
        typer.echo(f"initialized {settings.path}: {settings.table}, {errors.table}")
    elif store == "postgres":
        from sinks.postgres.errors import init_db as init_postgres_errors
        from sinks.postgres.settings import PostgresSinkSettings
        from sinks.postgres.sink import init_db as init_postgres

        pg = load(PostgresSinkSettings)
        init_postgres(pg)
        init_postgres_errors(pg, errors)
        typer.echo(f"initialized PostgreSQL: {pg.table}, {errors.table}")
    else:
        raise FatalError(f"unknown store {store!r}: choose sqlite or postgres")


@records_app.command("ls")
@fatal_errors
def records_ls(
    vertical: Annotated[str | None, typer.Option(help="Only this vertical.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 20,
) -> None:
    """Print the newest records stored in SQLite, one JSON line each."""
    from sinks.sqlite.sink import SQLiteSinkSettings

    settings = load(SQLiteSinkSettings)
    if not settings.path.exists():
        raise FatalError(f"no SQLite database at {settings.path} yet")
    query = (
        f'SELECT vertical, type, source_id, name, data, event_time FROM "{settings.table}" '
        "WHERE (? IS NULL OR vertical = ?) AND (? IS NULL OR type = ?) "
        "ORDER BY updated_at DESC LIMIT ?"
    )
    with sqlite3.connect(settings.path) as conn:
        rows = conn.execute(query, (vertical, vertical, type_, type_, limit)).fetchall()
    columns = ("vertical", "type", "source_id", "name", "vertical_data", "event_time")
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        record["vertical_data"] = orjson.loads(record["vertical_data"])
        typer.echo(orjson.dumps(record).decode())
