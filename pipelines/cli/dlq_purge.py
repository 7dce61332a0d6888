"""``qanat dlq purge``: purging dead letters (a purge rule, delete_records for the oldest,
and their rows in the errors table); registered on ``qanat dlq``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.cli.dlq_base import echo_json, with_filter
from pipelines.core.config import load
from pipelines.core.errors import FatalError
from pipelines.dlq.filters import DlqFilter, parse_when


def _error_rows(store: str) -> Any:
    """The errors table of the errors sink's store (its settings, QANAT_SQLITE_* etc.)."""
    from pipelines.dlq.purge import PostgresErrorRows, SQLiteErrorRows
    from sinks.errors import ErrorsSinkSettings

    table = load(ErrorsSinkSettings).table
    if store == "sqlite":
        from sinks.sqlite.sink import SQLiteSinkSettings

        return SQLiteErrorRows(load(SQLiteSinkSettings).path, table)
    if store == "postgres":
        from sinks.postgres.settings import PostgresSinkSettings

        pg = load(PostgresSinkSettings)
        return PostgresErrorRows(pg.dsn.get_secret_value(), pg.schema_name, table)
    if store == "none":
        return None
    raise FatalError(f"unknown store {store!r}: choose sqlite, postgres or none")


@fatal_errors
@with_filter
def dlq_purge(
    wanted: DlqFilter,
    before: Annotated[
        str | None, typer.Option(help="Older than: RFC 3339, or a duration ago (30d).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    store: Annotated[
        str, typer.Option(help="Also delete the rows of the errors table: sqlite, postgres, none.")
    ] = "none",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Purge dead letters older than a time (--before) and/or matching the filters.

    Kafka cannot delete single records, so: a purge rule is stored (ls, stats,
    show, export and replay skip those dead letters from now on); with --before
    alone, the oldest dead letters are deleted from the topic for real
    (delete_records); with --store, their rows in the errors table are deleted
    too."""
    from dataclasses import replace

    from pipelines.dlq.purge import apply_purge, plan_purge

    _core, kafka = service_settings()
    if before is not None:
        if wanted.until is not None:
            raise FatalError("give --before or --until, not both")
        try:
            wanted = replace(wanted, until=parse_when(before))
        except ValueError as exc:
            raise FatalError(str(exc)) from None
    if wanted == DlqFilter() and not every:
        raise FatalError("give --before, a filter, or --all")
    rows = _error_rows(store)
    plan = plan_purge(kafka, wanted)
    if not plan.count:
        typer.echo("nothing to purge")
        return
    if not yes:
        typer.confirm(f"Purge {plan.count} dead letter(s)?", abort=True)
    echo_json(apply_purge(kafka, plan, rows))
