"""``qanat dlq ...``: inspect, replay, export/import and purge dead letters.

Every command reads the ``<prefix>.dlq`` topic (the source of truth, see
:mod:`pipelines.dlq.read`) and takes the same filters.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.core.config import KafkaSettings, load
from pipelines.core.errors import FatalError
from pipelines.dlq.read import (
    DeadLetter,
    DlqFilter,
    DlqScanner,
    parse_header_matches,
    parse_when,
    select,
    stats,
)
from pipelines.dlq.state import DlqState

dlq_app = typer.Typer(
    help="Dead letters (the <prefix>.dlq topic): stats, ls, show, replay, export, import, purge.",
    no_args_is_help=True,
)
F = TypeVar("F", bound=Callable[..., Any])

# --- the filters every command takes --------------------------------------------------

_FILTERS: dict[str, tuple[Any, Any]] = {
    "vertical": (str | None, typer.Option(help="Only this vertical.", rich_help_panel="Filters")),
    "type_": (
        str | None,
        typer.Option("--type", help="Only this record type.", rich_help_panel="Filters"),
    ),
    "stage": (
        str | None,
        typer.Option(
            help="Only this stage: parse, validate, normalize, sink.", rich_help_panel="Filters"
        ),
    ),
    "reason": (
        str | None,
        typer.Option(help="Reason contains this (any case).", rich_help_panel="Filters"),
    ),
    "header": (
        list[str] | None,
        typer.Option(
            help="A header has this value: name=value (repeatable).", rich_help_panel="Filters"
        ),
    ),
    "ingestion_id": (
        str | None,
        typer.Option(help="Only this ingestion.", rich_help_panel="Filters"),
    ),
    "since": (
        str | None,
        typer.Option(
            help="Failed at or after: RFC 3339, or a duration ago (7d).", rich_help_panel="Filters"
        ),
    ),
    "until": (
        str | None,
        typer.Option(
            help="Failed before: RFC 3339, or a duration ago (7d).", rich_help_panel="Filters"
        ),
    ),
    "partition": (
        list[int] | None,
        typer.Option(help="Only this DLQ partition (repeatable).", rich_help_panel="Filters"),
    ),
    "from_offset": (
        int | None,
        typer.Option(help="From this DLQ offset.", rich_help_panel="Filters"),
    ),
    "to_offset": (
        int | None,
        typer.Option(help="Up to this DLQ offset (inclusive).", rich_help_panel="Filters"),
    ),
}


def build_filter(**values: Any) -> DlqFilter:
    """A DlqFilter from the command-line filter options; FatalError on a bad one."""
    try:
        return DlqFilter(
            vertical=values.get("vertical"),
            type=values.get("type_"),
            stage=values.get("stage"),
            reason=values.get("reason"),
            headers=parse_header_matches(values.get("header") or ()),
            ingestion_id=values.get("ingestion_id"),
            since=parse_when(values["since"]) if values.get("since") else None,
            until=parse_when(values["until"]) if values.get("until") else None,
            partitions=tuple(values["partition"]) if values.get("partition") else None,
            from_offset=values.get("from_offset"),
            to_offset=values.get("to_offset"),
        )
    except ValueError as exc:
        raise FatalError(str(exc)) from None


def with_filter(func: F) -> F:
    """Add the filter options to a command; it gets them as ``wanted: DlqFilter``."""
    signature = inspect.signature(func, eval_str=True)
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
        )
        for name, (kind, option) in _FILTERS.items()
    ]
    kept = [p for p in signature.parameters.values() if p.name != "wanted"]

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in _FILTERS}
        return func(*args, wanted=build_filter(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *extra])  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # typer reads the signature above, not func's
    return wrapper  # type: ignore[return-value]


JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts (see each command).")]
MaxReplaysOption = Annotated[
    int, typer.Option(min=0, help="Loop guard: skip (and count) letters replayed this often.")
]


@contextmanager
def _letters(
    kafka: KafkaSettings, wanted: DlqFilter, ordered: bool = False
) -> Iterator[Generator[DeadLetter, None, None]]:
    """The dead letters ``wanted`` matches, purged ones left out; ``ordered``: in
    (partition, offset) order, else in offset order per partition only."""
    state = DlqState.load(kafka)
    with DlqScanner(kafka) as scanner:
        scan = scanner.scan(scanner.ranges(wanted), ordered)
        letters = select(scan, wanted, state.is_purged)
        try:
            yield letters
        finally:
            letters.close()  # a command that stopped early: before the scanner closes


def _echo_json(value: Any) -> None:
    typer.echo(orjson.dumps(value).decode())


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


# --- inspecting ---------------------------------------------------------------------


@dlq_app.command("stats")
@fatal_errors
@with_filter
def dlq_stats(wanted: DlqFilter, as_json: JsonOption = False) -> None:
    """Counts by vertical, type, stage and reason; the oldest and newest dead letter."""
    _core, kafka = service_settings()
    with _letters(kafka, wanted) as letters:
        found = stats(letters)
    if as_json:
        _echo_json(found)
        return
    from rich.table import Table

    console = _console()
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


@dlq_app.command("ls")
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
    with _letters(kafka, wanted, ordered=True) as letters:
        for count, letter in enumerate(letters, start=1):
            if as_json:
                _echo_json(letter.brief())
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
    _console().print(table)


def _position(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise FatalError(f"a position is PARTITION:OFFSET, e.g. 0:42, not {text!r}")
    return int(partition), int(offset)


@dlq_app.command("show")
@fatal_errors
def dlq_show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET in the DLQ topic, e.g. 0:42.")],
    as_json: JsonOption = False,
) -> None:
    """Print one dead letter fully: key, headers, value, error details."""
    _core, kafka = service_settings()
    partition, offset = _position(position)
    wanted = DlqFilter(partitions=(partition,), from_offset=offset, to_offset=offset)
    with _letters(kafka, wanted) as letters:
        letter = next(letters, None)
    if letter is None:
        raise FatalError(f"no dead letter at {partition}:{offset} (or it was purged)")
    full = letter.full()
    if as_json:
        _echo_json(full)
        return
    from rich.pretty import Pretty
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in full.items():
        table.add_row(name, Pretty(value) if isinstance(value, dict | list) else str(value))
    _console().print(table)


# --- replaying ----------------------------------------------------------------------


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal (stderr); nothing otherwise."""
    console = _console(stderr=True)
    if not console.is_terminal:
        yield lambda _done, _total: None
        return
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(summary)
        return
    from rich.table import Table

    table = Table(title="dry run" if summary["dry_run"] else "replay", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right", overflow="fold")
    for name, value in summary.items():
        if isinstance(value, dict):
            for reason, count in value.items():
                table.add_row(f"  {reason}", str(count))
        elif isinstance(value, list):
            for line in value:
                table.add_row("  failure", line)
        else:
            table.add_row(name.replace("_", " "), str(value))
    _console().print(table)


@dlq_app.command("replay")
@fatal_errors
@with_filter
def dlq_replay(
    wanted: DlqFilter,
    dry_run: Annotated[
        bool, typer.Option(help="Re-validate against the current schemas; write nothing.")
    ] = False,
    max_replays: MaxReplaysOption = 3,
    rate: Annotated[float | None, typer.Option(min=0.001, help="At most N messages/s.")] = None,
    replay_id: Annotated[
        str | None, typer.Option(help="Checkpoint name (default: a hash of the filter).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Republish matching dead letters to the raw topic (or --dry-run them).

    Key, value and headers as they were, the error headers replaced by
    qanat.replay.count + 1 and qanat.replay.last_error; dead letters replayed
    --max-replays times already are skipped (the loop guard).

    Exactly once and resumable: messages and checkpoint are committed together,
    so the same command run again after an interruption continues where it
    stopped (and, once done, republishes only dead letters that arrived since).

    --dry-run runs each through the transform's own validation with the schemas
    registered now, and says how many would pass and why the rest would fail."""
    from pipelines.dlq.replay import Replayer, ReplayOptions, transform_verdict

    _core, kafka = service_settings()
    options = ReplayOptions(wanted, max_replays, rate, dry_run, replay_id)
    verdict = transform_verdict(kafka) if dry_run else None
    with _progress("dry run" if dry_run else "replaying") as progress:
        summary = Replayer(kafka, options, verdict=verdict, progress=progress).run()
    _print_summary(summary.to_json(), as_json)


# --- export / import ----------------------------------------------------------------


@dlq_app.command("export")
@fatal_errors
@with_filter
def dlq_export(
    wanted: DlqFilter,
    output: Annotated[Path, typer.Option("--output", "-o", help="File, or - for stdout.")] = Path(
        "-"
    ),
) -> None:
    """Write matching dead letters as NDJSON, to fix them by hand.

    One JSON object per line: position, key (+ key_encoding), value (+
    value_encoding: json, base64 or none) and headers."""
    from pipelines.dlq.export import export_line

    _core, kafka = service_settings()
    out = sys.stdout.buffer if str(output) == "-" else output.open("wb")
    count = 0
    try:
        with _letters(kafka, wanted) as letters:
            for letter in letters:
                out.write(export_line(letter, kafka.topics.dlq))
                count += 1
    finally:
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
    typer.echo(f"exported {count} dead letter(s)", err=True)


@dlq_app.command("import")
@fatal_errors
def dlq_import(
    file: Annotated[Path, typer.Argument(help="An NDJSON file from `qanat dlq export`, edited.")],
    max_replays: MaxReplaysOption = 3,
    dry_run: Annotated[bool, typer.Option(help="Validate only; write nothing.")] = False,
    skip_bad: Annotated[
        bool, typer.Option(help="Republish the good lines despite bad ones.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Republish an (edited) export to the raw topic, each line as a replay.

    Same headers and loop guard as replay; not checkpointed. Bad lines are
    reported with their numbers, and then nothing is written unless --skip-bad."""
    from pipelines.dlq.export import import_items, read_import
    from pipelines.dlq.replay import transform_verdict

    _core, kafka = service_settings()
    try:
        with file.open(encoding="utf-8") as lines:
            items, problems = read_import(lines)
    except (OSError, UnicodeDecodeError) as exc:
        raise FatalError(f"{file}: {exc}") from None
    for problem in problems:
        typer.echo(f"{file}: {problem}", err=True)
    if problems and not skip_bad:
        raise FatalError(f"{len(problems)} bad line(s): nothing imported (or use --skip-bad)")
    verdict = transform_verdict(kafka) if dry_run else None
    summary = import_items(kafka, items, max_replays, verdict).to_json()
    summary["bad_lines"] = len(problems)
    _print_summary(summary, as_json)


# --- purging ------------------------------------------------------------------------


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


@dlq_app.command("purge")
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
    _echo_json(apply_purge(kafka, plan, rows))
