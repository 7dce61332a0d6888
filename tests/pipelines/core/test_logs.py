"""Structured logs: one JSON object per line with the message's Kafka position, or text."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from pipelines.core.logs import JsonFormatter, TextFormatter, configure_logging, message_fields


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("sinks.base", logging.WARNING, __file__, 1, "x=%s", (1,), None)
    record.__dict__.update(extra)
    return record


def test_json_line_has_the_contract_fields() -> None:
    fields = message_fields("qanat.records", 1, 42, "ing-1")
    line = orjson.loads(JsonFormatter().format(_record(**fields)))
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "WARNING",
        "logger": "sinks.base",
        "message": "x=1",
        "topic": "qanat.records",
        "partition": 1,
        "offset": 42,
        "ingestion_id": "ing-1",
    }


def test_json_line_without_position_and_with_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = orjson.loads(JsonFormatter().format(record))
    assert "topic" not in line and "offset" not in line
    assert "ValueError: boom" in line["exception"]
    assert "\n" not in JsonFormatter().format(record)


def test_text_line_names_the_position() -> None:
    text = TextFormatter().format(_record(**message_fields("qanat.dlq", 0, 7, "i9")))
    assert text.endswith("WARNING sinks.base: x=1 [qanat.dlq[0]@7 ingestion=i9]")
    assert TextFormatter().format(_record()).endswith("sinks.base: x=1")


@pytest.mark.usefixtures("restore_logging")
def test_every_logger_goes_through_one_json_handler() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    for name in ("qanat.test", "quixstreams.app", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).info("hello from %s", name)
    logging.getLogger("qanat.test").debug("below the level")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == [
        "qanat.test",
        "quixstreams.app",
        "uvicorn.error",
        "uvicorn.access",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_quix_keeps_our_handler() -> None:
    from quixstreams.logging import configure_logging as quix_configure

    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    assert quix_configure("INFO") is False  # it leaves a configured logger alone
    logging.getLogger("quixstreams").info("still json")
    assert orjson.loads(stream.getvalue().splitlines()[-1])["message"] == "still json"
