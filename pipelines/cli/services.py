"""``qanat transform`` and ``qanat sink ...``: the pipeline's stages after the sources, each
a service of its own (Quix Streams applications; registered by main)."""

from __future__ import annotations

from typing import Any

import typer

from pipelines.cli.base import StoreArgument, fatal_errors, service_settings
from pipelines.core.config import CoreSettings, KafkaSettings, load
from pipelines.core.errors import FatalError
from pipelines.core.ops import run_quix, service_ops

sink_app = typer.Typer(help="Run a sink: upserts records into a store.", no_args_is_help=True)


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
    store: StoreArgument = "sqlite",
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
