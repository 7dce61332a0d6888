"""Logging of every qanat process: text for people, or one JSON object per line.

``QANAT_LOG_FORMAT=json`` makes each line a JSON object with ``time`` (RFC 3339 UTC),
``level``, ``logger`` and ``message``, plus ``topic``, ``partition``, ``offset`` and
``ingestion_id`` when the code that logged passed them (``extra=message_fields(...)``),
and ``exception`` with the traceback when there is one. Quix Streams' and uvicorn's
loggers go through the same handler, so a process never mixes formats.

>>> record = logging.LogRecord("sinks.base", logging.WARNING, __file__, 1, "dead letter", None,
...                            None)
>>> record.topic, record.partition, record.offset = "qanat.records", 2, 41
>>> line = orjson.loads(JsonFormatter().format(record))
>>> line["level"], line["logger"], line["message"], line["offset"]
('WARNING', 'sinks.base', 'dead letter', 41)
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

MESSAGE_FIELDS = ("topic", "partition", "offset", "ingestion_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that libraries configure with handlers of their own: ours replace them.
LIBRARY_LOGGERS = ("quixstreams", "uvicorn", "uvicorn.access", "uvicorn.error")


def message_fields(
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    ingestion_id: str | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a log call about one Kafka message (None values are left out).

    >>> message_fields("qanat.raw", 0, 7)
    {'topic': 'qanat.raw', 'partition': 0, 'offset': 7}
    """
    values = {"topic": topic, "partition": partition, "offset": offset}
    values["ingestion_id"] = ingestion_id
    return {name: value for name, value in values.items() if value is not None}


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in MESSAGE_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with ``[topic[partition]@offset ingestion=...]`` when present."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        topic = getattr(record, "topic", None)
        where = []
        if topic is not None:
            where.append(
                f"{topic}[{getattr(record, 'partition', '?')}]@{getattr(record, 'offset', '?')}"
            )
        ingestion_id = getattr(record, "ingestion_id", None)
        if ingestion_id is not None:
            where.append(f"ingestion={ingestion_id}")
        if not where:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(where)}]{newline}{rest}"


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record of the process, at ``level`` and above, to ``stream``
    (stderr) in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning becomes a line in the same format
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True
        library.setLevel(logging.NOTSET)  # uvicorn sets its loggers' levels in-process
        library.disabled = False
    # Quix configures its logger only when it has no handler: give it a no-op one, so
    # its records keep propagating to ours.
    logging.getLogger("quixstreams").addHandler(logging.NullHandler())
