"""What every ``qanat dlq`` command shares: the filters they all take (one
:class:`~pipelines.dlq.filters.DlqFilter` from the command-line options), reading the dead
letters a filter matches, and printing (JSON for scripts, rich tables otherwise)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Annotated, Any, TypeVar

import orjson
import typer

from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError
from pipelines.dlq.filters import DlqFilter, parse_header_matches, parse_when, select
from pipelines.dlq.letter import DeadLetter
from pipelines.dlq.read import DlqScanner
from pipelines.dlq.state import DlqState

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
    # ... and the type hints, which without __wrapped__ it would evaluate in this module
    hints = {p.name: p.annotation for p in signature.parameters.values()}
    wrapper.__annotations__ = {**hints, "return": signature.return_annotation}
    return wrapper  # type: ignore[return-value]


JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts (see each command).")]


@contextmanager
def dead_letters(
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


def echo_json(value: Any) -> None:
    typer.echo(orjson.dumps(value).decode())


def rich_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)
