"""One place that turns qanat settings into a Quix Streams Application."""

from __future__ import annotations

from typing import Any

from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig

from pipelines.core.config import CoreSettings, KafkaSettings


def quix_application(
    kafka: KafkaSettings, core: CoreSettings, group: str, **options: Any
) -> Application:
    """An Application in consumer group ``<prefix>.<group>``, reading from the earliest offset.

    Topics are created by :func:`pipelines.core.topics.ensure_topics` with qanat's own settings,
    so Quix is not allowed to create them with its defaults.
    """
    # Connection and security settings become Quix's ConnectionConfig; every other client
    # setting (timeouts, batching) reaches its consumer and producer as extra config.
    connection = ConnectionConfig.from_librdkafka_dict(kafka.client(), ignore_extras=True)
    extra = {
        name: value
        for name, value in kafka.client_config.items()
        if name.replace(".", "_") not in ConnectionConfig.model_fields
    }
    defaults: dict[str, Any] = {
        "consumer_extra_config": extra,
        "producer_extra_config": extra,
        "auto_offset_reset": "earliest",
        "commit_interval": 1.0,
        "auto_create_topics": False,
        "state_dir": core.data_dir / "state" / group,
        "loglevel": core.log_level,
    }
    return Application(
        broker_address=connection,
        consumer_group=kafka.consumer_group(group),
        **(defaults | options),
    )
