"""``qanat dlq replay|export|import``: republishing dead letters to the raw topic, as they
are (replay, or a dry run of it) or fixed by hand (export, edit, import); registered on
``qanat dlq``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.cli.dlq_base import JsonOption, dead_letters, echo_json, rich_console, with_filter
from pipelines.core.errors import FatalError
from pipelines.dlq.filters import DlqFilter

MaxReplaysOption = Annotated[
    int, typer.Option(min=0, help="Loop guard: skip (and count) letters replayed this often.")
]


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal (stderr); nothing otherwise."""
    console = rich_console(stderr=True)
    if not console.is_terminal:
        yield lambda _done, _total: None
        return
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(summary)
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
    rich_console().print(table)


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
        with dead_letters(kafka, wanted) as letters:
            for letter in letters:
                out.write(export_line(letter, kafka.topics.dlq))
                count += 1
    finally:
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
    typer.echo(f"exported {count} dead letter(s)", err=True)


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
