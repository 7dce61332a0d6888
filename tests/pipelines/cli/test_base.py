"""The CLI's error wrapper: one line on stderr and exit status 1, never a traceback."""

from __future__ import annotations

import pytest
import typer
from confluent_kafka import KafkaError, KafkaException

from pipelines.cli.base import fatal_errors
from pipelines.core.errors import ConfigError, RetriableError


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("QANAT_X: bad"),
        RetriableError("Kafka did not answer"),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
    ],
)
def test_errors_become_one_line_and_exit_1(
    error: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    @fatal_errors
    def command() -> None:
        raise error

    with pytest.raises(typer.Exit) as exited:
        command()
    assert exited.value.exit_code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qanat: error: ")
