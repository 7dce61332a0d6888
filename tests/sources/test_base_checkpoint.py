"""The cursor is saved only after Kafka acknowledged the page's events: the real broker is
made to refuse them (the raw topic's max.message.bytes), the poll fails and saves nothing;
once the broker takes them again, the same page is fetched again and lands."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from quixstreams.sources.base.exceptions import SourceException

from pipelines.core.config import CoreSettings, KafkaSettings
from sources.rest import RestSettings, RestSource
from sources.runner import run_sources
from tests.kafka_helpers import consume
from tests.sources.pull_routes import serve_rest
from tests.sources.pull_server import Catalog, pull_server


def limit_message_bytes(kafka: KafkaSettings, limit: int) -> None:
    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource("topic", kafka.topics.raw, incremental_configs=[entry])
    admin = AdminClient(kafka.client())
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


@pytest.mark.integration
def test_no_checkpoint_before_kafka_acknowledges(kafka: KafkaSettings, tmp_path: Path) -> None:
    catalog = Catalog()
    for number in range(1, 4):
        catalog.upsert(f"p{number}", f"Product {number} " + "x" * 2000)
    with pull_server() as server:
        serve_rest(server, catalog)
        settings = RestSettings(
            name="big",
            vertical="shop",
            type="product",
            url=f"{server.url}/link",
            pagination={"type": "link"},
            source_id_field="id",
            incremental={"field": "updated_at", "param": "since"},
            retry={"attempts": 1},
        )

        def run_once() -> None:
            run_sources(
                [RestSource(settings, kafka.topics, once=True)],
                kafka,
                CoreSettings(data_dir=tmp_path),
            )

        limit_message_bytes(kafka, 1000)  # every batch of these records is larger
        with pytest.raises(SourceException):
            run_once()
        assert consume(kafka, kafka.topics.raw, expected=0, settle=1.0) == []

        limit_message_bytes(kafka, 1048588)
        run_once()
        landed = consume(kafka, kafka.topics.raw, expected=3, settle=0.5)
    assert sorted(m.key for m in landed) == [
        b"shop/product/p1",
        b"shop/product/p2",
        b"shop/product/p3",
    ]
    # The second run asked from the start again: the failed poll had saved no cursor.
    assert [r.query.get("since") for r in server.seen("/link")] == [None, None]
