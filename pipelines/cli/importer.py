"""``qanat import FILE --vertical V --type T``: publish a CSV, NDJSON or JSON-array file.

Shows a rich progress bar (bytes and records) on a terminal, a plain line every few
seconds otherwise; prints the import's report as one JSON line on stdout. Exit status: 0
when the file was imported (rejected records are in the report), 130 when interrupted
(Ctrl-C or SIGTERM: what was produced is flushed and checkpointed; run the same command
again to resume), 1 on an error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
import yaml
from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.core.config import load
from pipelines.core.errors import ConfigError, RetriableError
from pipelines.core.records import check_identifier
from pipelines.core.topics import ensure_topics
from sources.files.mapping import parse_pairs
from sources.files.readers import FileFormatError
from sources.files.source import FileImporter, FileImportSettings
from sources.files.source import Progress as ImportProgress
from sources.files.stop import stop_on_signals

PLAIN_EVERY_S = 5.0
MB = 1024 * 1024


class RichProgress(ImportProgress):
    """A rich bar on stderr: bytes read of the file, records published, speed."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[records]:,} records"),
            TimeElapsedColumn(),
            console=Console(stderr=True),  # stdout is the report's
            transient=False,
        )
        self.task = self.bar.add_task("import", total=None, records=0)

    def start(self, total_bytes: int, offset: int, records: int) -> None:
        self.bar.start()
        self.bar.update(self.task, total=total_bytes, completed=offset, records=records)

    def update(self, offset: int, records: int) -> None:
        self.bar.update(self.task, completed=offset, records=records)

    def finish(self, offset: int, records: int) -> None:
        self.update(offset, records)
        self.bar.stop()


class PlainProgress(ImportProgress):
    """One line on stderr every ``PLAIN_EVERY_S`` seconds (for logs and pipes)."""

    def __init__(self) -> None:
        self.total = 0
        self._last = 0.0

    def start(self, total_bytes: int, offset: int, records: int) -> None:
        self.total = total_bytes
        self._last = time.monotonic()
        if records:
            self._line(offset, records, "resuming at")

    def update(self, offset: int, records: int) -> None:
        if time.monotonic() - self._last >= PLAIN_EVERY_S:
            self._last = time.monotonic()
            self._line(offset, records, "imported")

    def finish(self, offset: int, records: int) -> None:
        self._line(offset, records, "read")

    def _line(self, offset: int, records: int, verb: str) -> None:
        share = f" ({100 * offset / self.total:.0f}%)" if self.total else ""
        print(
            f"qanat import: {verb} {offset / MB:,.1f} of {self.total / MB:,.1f} MB{share}, "
            f"{records:,} records published",
            file=sys.stderr,
            flush=True,
        )


def _progress(kind: str) -> ImportProgress:
    if kind == "auto":
        kind = "rich" if sys.stderr.isatty() else "plain"
    return {"rich": RichProgress, "plain": PlainProgress}.get(kind, ImportProgress)()


def _mapping_file(path: Path | None) -> dict[str, Any]:
    """The mapping YAML: ``{field: column}``, or ``{mapping: {...}, cast: {...}}``."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the mapping file {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of record field -> column")
    if "mapping" in loaded or "cast" in loaded:
        return loaded
    return {"mapping": loaded}


Format = Literal["auto", "csv", "ndjson", "json"]
ProgressKind = Literal["auto", "rich", "plain", "none"]


@fatal_errors
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file.")],
    vertical: Annotated[str, typer.Option(help="Vertical of every record.")],
    type_: Annotated[str, typer.Option("--type", help="Type of every record.")],
    format_: Annotated[
        Format | None, typer.Option("--format", help="Default: from the extension.")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="FIELD=COLUMN: the record field a column becomes."),
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="YAML file: {field: column}, or {mapping:, cast:}.")
    ] = None,
    cast: Annotated[
        list[str] | None,
        typer.Option(help="FIELD=KIND (str, int, float, bool, json) for text cells."),
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter.")] = None,
    encoding: Annotated[str | None, typer.Option(help="CSV text encoding.")] = None,
    json_items: Annotated[
        str | None, typer.Option(help="ijson prefix of the records (JSON; default item).")
    ] = None,
    file_id: Annotated[
        str | None, typer.Option(help="Name for keys and checkpoint (default: fingerprint).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Records between checkpoints.")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore a checkpoint: start from the top.")
    ] = False,
    progress: Annotated[ProgressKind, typer.Option(help="Progress display.")] = "auto",
) -> None:
    """Publish a CSV, NDJSON or JSON-array file's records to the raw topic (resumable)."""
    try:
        with stop_on_signals() as stop:
            importer = _importer(
                file,
                vertical,
                type_,
                mapping,
                map_,
                cast,
                format=format_,
                delimiter=delimiter,
                encoding=encoding,
                json_items=json_items,
                file_id=file_id,
                checkpoint_every=checkpoint_every,
            )
            stop.check()  # interrupted while starting
            report = importer.run(_progress(progress), restart=restart, stop=stop)
    except KeyboardInterrupt:  # a stop the import answered, or one before it began
        typer.echo("qanat import: interrupted; run the same command to resume", err=True)
        raise typer.Exit(130) from None
    except (RetriableError, FileFormatError) as exc:
        typer.echo(f"qanat: error: {exc} (run the same command to resume)", err=True)
        raise typer.Exit(1) from None
    typer.echo(orjson.dumps(report.body()).decode())


def _importer(
    file: Path,
    vertical: str,
    type_: str,
    mapping: Path | None,
    map_: list[str] | None,
    cast: list[str] | None,
    **options: Any,
) -> FileImporter:
    """The importer of ``file`` as the options say, its topics created."""
    core, kafka = service_settings()
    try:
        check_identifier("vertical", vertical)
        check_identifier("type", type_)
        from_file = _mapping_file(mapping)
        mapped = from_file.get("mapping", {}) | parse_pairs(map_ or [], "--map")
        casts = from_file.get("cast", {}) | parse_pairs(cast or [], "--cast")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = load(FileImportSettings, mapping=mapped or None, cast=casts or None, **options)
    try:
        ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    except KafkaException as exc:
        typer.echo(f"qanat: error: Kafka at {kafka.bootstrap_servers}: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        return FileImporter(kafka, settings, file, vertical, type_, core.data_dir / "imports")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
