"""What every ``qanat`` command module shares: one-line fatal errors, logging, settings,
and the command-line options (and arguments) that more than one module declares."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from confluent_kafka import KafkaException

from pipelines.core.config import CoreSettings, KafkaSettings, load
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])

StoreArgument = Annotated[str, typer.Argument(help="sqlite or postgres")]
"""The store a command works on (``qanat sink errors``, ``qanat db init``); default sqlite."""


def fatal_errors(func: F) -> F:
    """Turn qanat's fatal errors into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FatalError as exc:
            typer.echo(f"qanat: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except (RetriableError, KafkaException) as exc:
            # e.g. Kafka unreachable at start-up: one line, and a non-zero exit so that the
            # supervisor (qanat up, compose, Kubernetes) restarts the service with backoff
            typer.echo(f"qanat: error: Kafka or the store is unavailable: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _logging(core: CoreSettings) -> None:
    configure_logging(core.log_level, core.log_format, sys.stderr)


def service_settings() -> tuple[CoreSettings, KafkaSettings]:
    core = load(CoreSettings)
    _logging(core)
    return core, load(KafkaSettings)
