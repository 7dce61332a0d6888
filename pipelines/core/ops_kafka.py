"""What the ops endpoints ask Kafka: whether it is ready for a service, and how far the
service's consumer group lags behind.

:class:`KafkaCheck` is the ``kafka`` readiness check of ``/readyz`` (a metadata request
answers within the timeout and the service's topics exist); :class:`LagMonitor` is the
thread that sets the ``qanat_consumer_lag`` gauges. Both build their confluent-kafka
client from ``KafkaSettings.client`` (so a managed Kafka works by configuration alone),
lazily, on first use; :func:`pipelines.core.ops.service_ops` runs both for a service.

>>> kafka = KafkaSettings(bootstrap_servers="broker.example:9092")
>>> KafkaCheck(kafka, ["qanat.raw"], timeout=2.0).topics
('qanat.raw',)
>>> LagMonitor(kafka, "qanat-transform", ["qanat.raw"], interval=15.0).group
'qanat-transform'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from pipelines.core.config import KafkaSettings
from pipelines.core.metrics import CONSUMER_LAG

logger = logging.getLogger(__name__)


class KafkaCheck:
    """Kafka answers a metadata request within ``timeout`` and ``topics`` exist."""

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str], timeout: float) -> None:
        self.kafka, self.topics, self.timeout = kafka, tuple(topics), timeout
        self._admin: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        from confluent_kafka.admin import AdminClient

        with self._lock:
            if self._admin is None:
                self._admin = AdminClient(self.kafka.client(logger=_quiet_librdkafka()))
            metadata = self._admin.list_topics(timeout=self.timeout)
        if not metadata.brokers:
            raise ConnectionError(f"no broker answered at {self.kafka.bootstrap_servers}")
        missing = [topic for topic in self.topics if topic not in metadata.topics]
        if missing:
            raise LookupError(f"missing topic(s): {', '.join(missing)}")


def _quiet_librdkafka() -> logging.Logger:
    """librdkafka's own lines (connection refused, ...) at DEBUG: readiness says it once."""
    quiet = logging.getLogger("qanat.ops.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    return quiet


class LagMonitor:
    """Every ``interval`` seconds, sets ``qanat_consumer_lag`` of ``group`` on ``topics``:
    each partition's high watermark minus the group's committed offset (the low watermark
    when nothing is committed yet)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group: str,
        topics: Sequence[str],
        interval: float,
        timeout: float = 5.0,
    ) -> None:
        self.kafka, self.group, self.topics = kafka, group, tuple(topics)
        self.interval, self.timeout = interval, timeout
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self) -> LagMonitor:
        self._thread = threading.Thread(target=self._loop, name="qanat-lag", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:  # a daemon: a measurement stuck on Kafka cannot hold
            self._thread.join(2.0)  # up the shutdown

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.measure()
                except Exception as exc:  # Kafka away: the gauges keep their last value
                    logger.warning("consumer lag of %s not measured: %s", self.group, exc)
                self._stopping.wait(self.interval)
        finally:
            if self._consumer is not None:
                self._consumer.close()

    def measure(self) -> dict[tuple[str, int], int]:
        """Measure once; returns the lag per (topic, partition)."""
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:  # joins no group: it only reads the group's offsets
            config = {"group.id": self.group, "enable.auto.commit": False}
            self._consumer = Consumer(self.kafka.client(**config, logger=_quiet_librdkafka()))
        consumer = self._consumer
        metadata = consumer.list_topics(timeout=self.timeout)
        partitions = [
            TopicPartition(topic, partition)
            for topic in self.topics
            if topic in metadata.topics
            for partition in sorted(metadata.topics[topic].partitions)
        ]
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.committed(partitions, timeout=self.timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout, cached=False)
            position = tp.offset if tp.offset >= 0 else low
            lag = max(0, high - position)
            lags[(tp.topic, tp.partition)] = lag
            CONSUMER_LAG.labels(group=self.group, topic=tp.topic, partition=str(tp.partition)).set(
                lag
            )
        return lags
