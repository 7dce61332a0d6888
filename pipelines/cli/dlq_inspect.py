"""``qanat dlq stats|ls|show``: inspecting dead letters (registered on ``qanat dlq``)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.cli.dlq_base import JsonOption, dead_letters, echo_json, rich_console, with_filter
from pipelines.core.errors import FatalError
from pipelines.dlq.filters import DlqFilter, stats


@fatal_errors
@with_filter
def dlq_stats(wanted: DlqFilter, as_json: JsonOption = False) -> None:
    """Counts by vertical, type, stage and reason; the oldest and newest dead letter."""
    _core, kafka = service_settings()
    with dead_letters(kafka, wanted) as letters:
        found = stats(letters)
    if as_json:
        echo_json(found)
        return
    from rich.table import Table

    console = rich_console()
    console.print(
        f"{found['total']} dead letter(s), oldest {found['oldest']}, newest {found['newest']}"
    )
    for name in ("vertical", "type", "stage", "reason"):
        table = Table(title=f"by {name}", title_justify="left")
        table.add_column(name)
        table.add_column("count", justify="right")
        for value, count in found[f"by_{name}"].items():
            table.add_row(value, str(count))
        console.print(table)


@fatal_errors
@with_filter
def dlq_ls(
    wanted: DlqFilter,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List dead letters, oldest first per partition.

    A table; with --json, one JSON object per line (NDJSON): partition, offset,
    time, vertical, type, stage, reason, ingestion_id, replay_count, key."""
    _core, kafka = service_settings()
    rows = []
    with dead_letters(kafka, wanted, ordered=True) as letters:
        for count, letter in enumerate(letters, start=1):
            if as_json:
                echo_json(letter.brief())
            else:
                rows.append(letter.brief())
            if count >= limit:
                break
    if as_json:
        return
    from rich.table import Table

    table = Table()
    for column in ("position", "failed at", "vertical/type", "stage", "replays"):
        table.add_column(column, overflow="fold")
    table.add_column("reason", overflow="fold", min_width=24)
    for row in rows:
        table.add_row(
            f"{row['partition']}:{row['offset']}",
            row["time"][:16].replace("T", " "),
            f"{row['vertical']}/{row['type']}",
            str(row["stage"]),
            str(row["replay_count"]),
            str(row["reason"]),
        )
    rich_console().print(table)


def _position(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise FatalError(f"a position is PARTITION:OFFSET, e.g. 0:42, not {text!r}")
    return int(partition), int(offset)


@fatal_errors
def dlq_show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET in the DLQ topic, e.g. 0:42.")],
    as_json: JsonOption = False,
) -> None:
    """Print one dead letter fully: key, headers, value, error details."""
    _core, kafka = service_settings()
    partition, offset = _position(position)
    wanted = DlqFilter(partitions=(partition,), from_offset=offset, to_offset=offset)
    with dead_letters(kafka, wanted) as letters:
        letter = next(letters, None)
    if letter is None:
        raise FatalError(f"no dead letter at {partition}:{offset} (or it was purged)")
    full = letter.full()
    if as_json:
        echo_json(full)
        return
    from rich.json import JSON
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in full.items():  # the value, headers and details as JSON, not Python
        structured = isinstance(value, dict | list)
        table.add_row(name, JSON.from_data(value, default=str) if structured else str(value))
    rich_console().print(table)
