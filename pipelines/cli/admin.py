"""``qanat schemas ...`` and ``qanat keys ...``: the administration commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from pipelines.cli.base import fatal_errors, service_settings
from pipelines.core.config import CoreSettings, load
from pipelines.core.errors import FatalError

schemas_app = typer.Typer(
    help="The schema registry (JSON Schemas per vertical/type, versioned).", no_args_is_help=True
)

# --- the schema registry -------------------------------------------------------------

VerticalOption = Annotated[str, typer.Option("--vertical", help="The vertical, e.g. shop.")]
TypeOption = Annotated[str, typer.Option("--type", help="The record type, e.g. product.")]


@schemas_app.command("register")
@fatal_errors
def schemas_register(
    file: Annotated[Path, typer.Argument(help="A JSON Schema (draft 2020-12) file.")],
    vertical: VerticalOption,
    type_: TypeOption,
) -> None:
    """Register a schema; prints its version (unchanged schema: the latest version)."""
    from pipelines.transform.registry import InvalidSchemaError, SchemaRegistry

    _core, kafka = service_settings()
    try:
        schema = orjson.loads(file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise FatalError(f"{file}: {exc}") from None
    registry = SchemaRegistry(kafka)
    try:
        version = registry.register(vertical, type_, schema)
    except InvalidSchemaError as exc:
        typer.echo(f"qanat: error: {file} is not a valid JSON Schema:", err=True)
        for error in exc.errors:
            typer.echo(f"  {error['path']}: {error['message']}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # a bad vertical or type
        raise FatalError(str(exc)) from None
    finally:
        registry.close()
    typer.echo(str(version))


@schemas_app.command("list")
@fatal_errors
def schemas_list() -> None:
    """Print the latest version of every registered schema, one JSON line each."""
    from pipelines.transform.registry import SchemaRegistry

    _core, kafka = service_settings()
    registry = SchemaRegistry(kafka)
    try:
        for found in registry.list():
            line = {k: v for k, v in found.to_json().items() if k != "schema"}
            typer.echo(orjson.dumps(line).decode())
    finally:
        registry.close()


@schemas_app.command("show")
@fatal_errors
def schemas_show(
    vertical: Annotated[str, typer.Argument(help="The vertical.")],
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="The record type.")],
    version: Annotated[int | None, typer.Option(help="This version (default: the latest).")] = None,
) -> None:
    """Print one schema version as JSON: vertical, type, version, schema, registered_at."""
    from pipelines.transform.registry import SchemaRegistry

    _core, kafka = service_settings()
    registry = SchemaRegistry(kafka)
    try:
        if version is None:
            found = registry.latest(vertical, type_)
        else:
            found = registry.get(vertical, type_, version)
    finally:
        registry.close()
    if found is None:
        which = "no schema" if version is None else f"no version {version}"
        raise FatalError(f"{which} registered for {vertical}/{type_}")
    typer.echo(orjson.dumps(found.to_json(), option=orjson.OPT_INDENT_2).decode())


# --- API keys of the HTTP source -----------------------------------------------------

keys_app = typer.Typer(help="API keys of the HTTP ingest API.", no_args_is_help=True)


def key_store(keys_path: Path | None = None) -> Any:
    """The SQLite key store: QANAT_HTTP_KEYS_PATH, else <QANAT_DATA_DIR>/keys.db."""
    from sources.http.auth import SQLiteKeyStore, key_store_path

    if keys_path is None:
        from sources.http.settings import HttpSourceSettings

        keys_path = load(HttpSourceSettings).keys_path
    return SQLiteKeyStore(key_store_path(keys_path, load(CoreSettings).data_dir))


@keys_app.command("create")
@fatal_errors
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. the client's name.")],
    vertical: Annotated[
        list[str] | None, typer.Option(help="A vertical the key may use (repeatable).")
    ] = None,
    all_verticals: Annotated[bool, typer.Option(help="The key may use every vertical.")] = False,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="write (ingest), read and/or admin (schemas) (repeatable)."),
    ] = None,
) -> None:
    """Create a key and print it, once: only its hash is stored."""
    from sources.http.auth import create_key

    if all_verticals == bool(vertical):
        raise FatalError("give --vertical (one or more) or --all-verticals")
    try:
        key, plaintext = create_key(
            key_store(), name, scope or [], None if all_verticals else vertical
        )
    except ValueError as exc:
        raise FatalError(str(exc)) from None
    typer.echo(f"created key {key.id}; it is shown only this once:", err=True)
    typer.echo(plaintext)


@keys_app.command("list")
@fatal_errors
def keys_list() -> None:
    """Print every key (never its secret), one JSON line each."""
    for key in key_store().list_keys():
        typer.echo(orjson.dumps(key.describe()).decode())


@keys_app.command("revoke")
@fatal_errors
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    if not key_store().revoke(key_id):
        raise FatalError(f"no key {key_id!r}")
    typer.echo(f"revoked {key_id}")
