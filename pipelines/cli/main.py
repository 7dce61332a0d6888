"""``qanat``: the one command that starts every part. The only module that knows them all."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from pipelines.cli.admin import key_store, keys_app, schemas_app
from pipelines.cli.base import fatal_errors, service_settings
from pipelines.cli.collect import collect
from pipelines.cli.dlq import dlq_app
from pipelines.cli.importer import import_file
from pipelines.cli.ops import topics_app
from pipelines.cli.sources import source_mqtt
from pipelines.core.config import CoreSettings, KafkaSettings, load
from pipelines.core.errors import FatalError
from pipelines.core.ops import (
    KafkaCheck,
    OpsSettings,
    Readiness,
    app_paths,
    exit_zero_after_sigterm,
    freeze_startup_heap,
    ops_router,
    run_quix,
    service_ops,
)

app = typer.Typer(
    help="qanat: streaming ingestion into PostgreSQL or SQLite, on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="Local development tools.", no_args_is_help=True)
broker_app = typer.Typer(
    help="The local Apache Kafka broker (single-node KRaft).", no_args_is_help=True
)
source_app = typer.Typer(help="Run a source: publishes raw events to Kafka.", no_args_is_help=True)
sink_app = typer.Typer(help="Run a sink: upserts records into a store.", no_args_is_help=True)
db_app = typer.Typer(help="Datastore administration.", no_args_is_help=True)
records_app = typer.Typer(help="Read stored records.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
dev_app.add_typer(broker_app, name="broker")
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

# --- local development ---------------------------------------------------------------

PortOption = Annotated[
    int, typer.Option(help="Broker port on 127.0.0.1.", envvar="QANAT_DEV_BROKER_PORT")
]


def _broker(port: int) -> Any:
    from pipelines.devbroker import LocalBroker

    core = load(CoreSettings)
    return LocalBroker(core.data_dir / "broker", port=port)


@broker_app.command("start")
@fatal_errors
def broker_start(port: PortOption = 9092) -> None:
    """Fetch (once) and start the broker; returns when it answers."""
    typer.echo(f"Apache Kafka is up at {_broker(port).start()}")


@broker_app.command("stop")
@fatal_errors
def broker_stop(port: PortOption = 9092) -> None:
    """Stop the broker cleanly (SIGTERM, then wait)."""
    typer.echo("stopped" if _broker(port).stop() else "not running")


@broker_app.command("status")
@fatal_errors
def broker_status(port: PortOption = 9092) -> None:
    """Say whether the broker runs and answers; exit 1 when it does not."""
    status = _broker(port).status()
    if status.running:
        state = "answering" if status.answering else "not answering"
        typer.echo(f"running (pid {status.pid}) at {status.bootstrap}, {state}")
    else:
        typer.echo("not running")
    raise typer.Exit(0 if status.answering else 1)


@broker_app.command("fetch")
@fatal_errors
def broker_fetch() -> None:
    """Download the Kafka jars with Maven into the cache (nothing else)."""
    from pipelines.devbroker import fetch_kafka_libs

    typer.echo(f"Kafka jars in {fetch_kafka_libs()}")


@app.command("up")
@fatal_errors
def up(
    broker_port: Annotated[
        int | None,
        typer.Option(
            help="Broker port on 127.0.0.1 (default: the data directory's last one, else "
            "9092, else a free one; one asked for must be free).",
            envvar="QANAT_DEV_BROKER_PORT",
            show_default=False,
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the HTTP source (default: 8080, else a free one).",
            envvar="QANAT_HTTP_PORT",
            show_default=False,
        ),
    ] = None,
    http_host: Annotated[str, typer.Option(envvar="QANAT_HTTP_HOST")] = "127.0.0.1",
    schema_dir: Annotated[Path, typer.Option(envvar="QANAT_TRANSFORM_SCHEMA_DIR")] = Path(
        "schemas"
    ),
) -> None:
    """Start the local pipeline: broker, HTTP source, transform, SQLite and errors sinks
    (and Mosquitto and the MQTT source when Mosquitto is installed); prints every port."""
    from pipelines.cli.up import run_local_pipeline
    from sinks.sqlite.sink import SQLiteSinkSettings

    core = load(CoreSettings)
    sqlite_path = load(SQLiteSinkSettings).path
    raise typer.Exit(
        run_local_pipeline(
            core.data_dir, broker_port, http_host, http_port, sqlite_path, schema_dir
        )
    )


# --- the pipeline's services ---------------------------------------------------------


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


@app.command("transform")
@fatal_errors
def transform() -> None:
    """Validate and normalize raw events into records; route failures to the DLQ."""
    from pipelines.core.topics import ensure_topics
    from pipelines.transform.registry import follow_schemas
    from pipelines.transform.stage import TransformSettings, build_transform_app

    core, kafka = service_settings()
    settings = load(TransformSettings)
    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    schemas, follower = follow_schemas(kafka, settings.schema_dir)  # seed, then follow live
    group = kafka.consumer_group(settings.consumer_group)
    try:
        with service_ops("transform", kafka, topics=[kafka.topics.raw], group=group) as ops:
            app = build_transform_app(kafka, core, settings, schemas=schemas)
            run_quix(app, ops.shutdown_timeout_s)
    finally:
        follower.stop()


def _run_sink(
    sink: Any,
    group: str,
    core: CoreSettings,
    kafka: KafkaSettings,
    *,
    dlq: bool = False,
    ingestions: Any = None,
) -> None:
    from pipelines.core.quixapp import quix_application
    from pipelines.core.topics import ensure_topics

    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    quix = quix_application(kafka, core, group)
    if dlq:  # dead letters are stored with their exact bytes
        topic = quix.topic(kafka.topics.dlq, value_deserializer="bytes", key_deserializer="bytes")
    else:
        topic = quix.topic(kafka.topics.records, value_deserializer="json", key_deserializer="str")
    quix.dataframe(topic).sink(sink)
    topics, stores = [topic.name], [sink]
    if ingestions is not None:  # the ingestion summaries, in the same consumer group
        summaries = quix.topic(
            kafka.topics.ingestions, value_deserializer="json", key_deserializer="str"
        )
        quix.dataframe(summaries).sink(ingestions)
        topics, stores = [*topics, summaries.name], [sink, ingestions]
    lag_group = kafka.consumer_group(group)
    with service_ops(group, kafka, topics=topics, group=lag_group, stores=stores) as ops:
        run_quix(quix, ops.shutdown_timeout_s)


@sink_app.command("sqlite")
@fatal_errors
def sink_sqlite() -> None:
    """Upsert records into SQLite (the embedded default)."""
    from sinks.base import KafkaDeadLetters
    from sinks.sqlite.sink import SQLiteSink, SQLiteSinkSettings

    core, kafka = service_settings()
    sink = SQLiteSink(load(SQLiteSinkSettings), dead_letters=KafkaDeadLetters(kafka))
    _run_sink(sink, "sink-sqlite", core, kafka)


@sink_app.command("postgres")
@fatal_errors
def sink_postgres() -> None:
    """Upsert records into PostgreSQL."""
    from sinks.base import KafkaDeadLetters
    from sinks.postgres.settings import PostgresSinkSettings
    from sinks.postgres.sink import PostgresSink

    core, kafka = service_settings()
    sink = PostgresSink(load(PostgresSinkSettings), dead_letters=KafkaDeadLetters(kafka))
    _run_sink(sink, "sink-postgres", core, kafka)


@sink_app.command("errors")
@fatal_errors
def sink_errors(
    store: Annotated[str, typer.Argument(help="sqlite or postgres")] = "sqlite",
) -> None:
    """Store dead letters from the DLQ topic in the errors table (record_errors), and
    ingestion summaries from the ingestions topic in the ingestions table."""
    from sinks.errors import ErrorsSink, ErrorsSinkSettings
    from sinks.ingestions import IngestionsSink

    core, kafka = service_settings()
    errors = load(ErrorsSinkSettings)
    sink: ErrorsSink
    ingestions: IngestionsSink
    if store == "sqlite":
        from sinks.sqlite.errors import SQLiteErrorsSink
        from sinks.sqlite.ingestions import SQLiteIngestionsSink
        from sinks.sqlite.sink import SQLiteSinkSettings

        sqlite = load(SQLiteSinkSettings)
        sink = SQLiteErrorsSink(sqlite, errors)
        ingestions = SQLiteIngestionsSink(sqlite, errors)
    elif store == "postgres":
        from sinks.postgres.errors import PostgresErrorsSink
        from sinks.postgres.ingestions import PostgresIngestionsSink
        from sinks.postgres.settings import PostgresSinkSettings

        pg = load(PostgresSinkSettings)
        sink = PostgresErrorsSink(pg, errors)
        ingestions = PostgresIngestionsSink(pg, errors)
    else:
        raise FatalError(f"unknown store {store!r}: choose sqlite or postgres")
    _run_sink(sink, "sink-errors", core, kafka, dlq=True, ingestions=ingestions)


@db_app.command("init")
@fatal_errors
def db_init(store: Annotated[str, typer.Argument(help="sqlite or postgres")] = "sqlite") -> None:
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
