"""The ingestions table: how many events each ingestion put in Kafka (``accepted``).

The HTTP source produces one summary per ingestion to the compacted topic
``<prefix>.ingestions`` (key: the ingestion id; value ``{ingestion_id, vertical, type,
source, accepted, received_at}``) after its events, in the same acknowledged batch. The
errors sink process (``qanat sink errors``) stores them next to the errors table with an
:class:`IngestionsSink` of its store (:mod:`sinks.sqlite.ingestions`,
:mod:`sinks.postgres.ingestions`); ``GET /api/v1/ingestions/{id}`` reads ``accepted`` from
it with that store's ingestion ledger.

>>> summary_row({"ingestion_id": "i1", "accepted": 3})
('i1', None, None, None, 3, None)
"""

from __future__ import annotations

import abc
import logging
from typing import Any

from quixstreams.sinks import BatchingSink, SinkBatch

from sinks.base import backpressure_on_retriable

logger = logging.getLogger(__name__)

FIELDS = ("ingestion_id", "vertical", "type", "source", "accepted", "received_at")


def summary_row(value: Any) -> tuple[Any, ...] | None:
    """The row of one summary message, or None (logged, skipped) when it is not one.

    >>> summary_row({"ingestion_id": "i", "accepted": -1}) is None
    True
    """
    if not isinstance(value, dict):
        return None
    ingestion_id, accepted = value.get("ingestion_id"), value.get("accepted")
    if not isinstance(ingestion_id, str) or not ingestion_id:
        return None
    if type(accepted) is not int or not 0 <= accepted < 2**63:
        return None

    def text(name: str) -> str | None:
        found = value.get(name)
        return found if isinstance(found, str) else None

    return (
        ingestion_id,
        text("vertical"),
        text("type"),
        text("source"),
        accepted,
        text("received_at"),
    )


class IngestionsSink(BatchingSink, abc.ABC):
    """Base of the ingestions sinks: read the topic with the ``json`` value deserializer;
    one idempotent insert per batch (a summary, keyed by its id, is stored once)."""

    def __init__(self, *, create_tables: bool = True, **quix_options: Any) -> None:
        super().__init__(**quix_options)
        self.create_tables = create_tables

    @abc.abstractmethod
    def setup(self) -> None: ...

    @abc.abstractmethod
    def store(self, rows: list[tuple[Any, ...]]) -> None: ...

    def close(self) -> None:
        """Release the connection (subclasses extend it)."""

    def flush(self) -> None:
        super().flush()  # type: ignore[no-untyped-call]

    def write(self, batch: SinkBatch) -> None:
        rows: dict[str, tuple[Any, ...]] = {}
        for item in batch:
            row = summary_row(item.value)
            if row is None:
                logger.warning(
                    "%s@%d is not an ingestion summary: skipped", batch.topic, item.offset
                )
                continue
            rows[row[0]] = row
        if rows:
            with backpressure_on_retriable(batch):
                self.store(list(rows.values()))
