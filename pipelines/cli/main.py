"""``qanat``: the one command that starts every part. The only module that knows them all."""

from __future__ import annotations

from typing import Any

import typer

from pipelines.cli.admin import key_store, keys_app, schemas_app
from pipelines.cli.base import fatal_errors, service_settings
from pipelines.cli.collect import collect
from pipelines.cli.dev import dev_app, up
from pipelines.cli.dlq import dlq_app
from pipelines.cli.importer import import_file
from pipelines.cli.ops import topics_app
from pipelines.cli.services import sink_app, transform
from pipelines.cli.sources import source_mqtt
from pipelines.cli.stores import db_app, records_app
from pipelines.core.config import load
from pipelines.core.ops import (
    OpsSettings,
    Readiness,
    app_paths,
    exit_zero_after_sigterm,
    freeze_startup_heap,
    ops_router,
)
from pipelines.core.ops_kafka import KafkaCheck

app = typer.Typer(
    help="qanat: streaming ingestion into PostgreSQL or SQLite, on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
source_app = typer.Typer(help="Run a source: publishes raw events to Kafka.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(source_app, name="source")
app.add_typer(sink_app, name="sink")
app.add_typer(db_app, name="db")
app.add_typer(records_app, name="records")
app.add_typer(schemas_app, name="schemas")
app.add_typer(keys_app, name="keys")
app.command("collect")(collect)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.command("import")(import_file)
source_app.command("mqtt")(source_mqtt)
app.command("up")(up)
app.command("transform")(transform)

# --- the HTTP service: the ingest routes and the control plane in one app -------------


@source_app.command("http")
@fatal_errors
def source_http() -> None:
    """The HTTP ingest API (batch endpoint)."""
    import uvicorn

    uvicorn.Server(http_service_config()).run()


def http_service_config() -> Any:
    """The uvicorn config of ``qanat source http``: the app with every router, and the
    edge's guards (header/body deadlines, the connection bound, JSON 400s). Tests take
    the app from ``.app`` without serving it."""
    from pipelines.control.app import control_router
    from pipelines.control.dlq import dlq_router
    from sources.http.app import create_app
    from sources.http.server import server_config
    from sources.http.settings import HttpSourceSettings

    core, kafka = service_settings()
    settings = load(HttpSourceSettings)
    keys = key_store(settings.keys_path) if settings.auth == "keys" else None
    http = create_app(kafka, settings, keys=keys)
    records, errors, ledger = _read_stores(settings.read_store)
    authenticator = http.state.authenticator
    ops = load(OpsSettings)
    readiness = Readiness({"kafka": KafkaCheck(kafka, [kafka.topics.raw], ops.check_timeout_s)})
    http.include_router(ops_router(readiness, skip=app_paths(http)))
    rw = {"read_auth": authenticator.require("read"), "write_auth": authenticator.require("write")}
    http.include_router(dlq_router(kafka, **rw))
    http.include_router(
        control_router(
            kafka,
            records=records,
            errors=errors,
            ledger=ledger,
            read_auth=authenticator.require("read"),
            admin_auth=authenticator.require("admin"),
            authorize=authenticator.authorize if settings.auth == "keys" else None,
            live_auth=authenticator.connection_key,
        )
    )
    exit_zero_after_sigterm()
    freeze_startup_heap()
    return server_config(
        http,
        settings,
        settings.host,
        settings.port,
        log_level=core.log_level.lower(),
        log_config=None,  # qanat's logging (text or JSON) formats uvicorn's lines too
        timeout_graceful_shutdown=int(ops.shutdown_timeout_s),
    )


def _read_stores(store: str) -> tuple[Any, Any, Any]:
    """The records, errors and ingestions readers of the HTTP service's read routes."""
    from sinks.errors import ErrorsSinkSettings

    errors = load(ErrorsSinkSettings)
    if store == "sqlite":
        from sinks.sqlite.errors import SQLiteErrorStore
        from sinks.sqlite.ingestions import SQLiteIngestionLedger
        from sinks.sqlite.reader import SQLiteRecordReader
        from sinks.sqlite.sink import SQLiteSinkSettings

        sqlite = load(SQLiteSinkSettings)
        return (
            SQLiteRecordReader(sqlite),
            SQLiteErrorStore(sqlite, errors),
            SQLiteIngestionLedger(sqlite, errors),
        )
    if store == "postgres":
        from sinks.postgres.errors import PostgresErrorStore
        from sinks.postgres.ingestions import PostgresIngestionLedger
        from sinks.postgres.reader import PostgresRecordReader
        from sinks.postgres.settings import PostgresSinkSettings

        pg = load(PostgresSinkSettings)
        return (
            PostgresRecordReader(pg),
            PostgresErrorStore(pg, errors),
            PostgresIngestionLedger(pg, errors),
        )
    return None, None, None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
