"""``qanat dev broker ...`` and ``qanat up``: the local development tools (the local
Apache Kafka broker, and the whole pipeline on one machine; registered by main)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.base import fatal_errors
from pipelines.core.config import CoreSettings, load

dev_app = typer.Typer(help="Local development tools.", no_args_is_help=True)
broker_app = typer.Typer(
    help="The local Apache Kafka broker (single-node KRaft).", no_args_is_help=True
)
dev_app.add_typer(broker_app, name="broker")

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
    from pipelines.devbroker_jars import fetch_kafka_libs

    typer.echo(f"Kafka jars in {fetch_kafka_libs()}")


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
