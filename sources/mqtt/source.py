"""The MQTT source: IoT devices publish to a broker, qanat subscribes and feeds Kafka.

Every message on a subscribed topic pattern (:mod:`sources.mqtt.settings`; default
``qanat/{vertical}/{type}`` and ``qanat/{vertical}/{type}/{device_id}``) becomes raw events
in the record contract: one per element when the payload is a JSON array, else one with
the payload's bytes untouched, even when they are not JSON (the transform dead-letters
such an event with its reason: nothing is dropped in silence). Besides the contract
headers, an event carries ``qanat.mqtt.topic`` and, when the topic names one,
``qanat.device_id``; it is keyed ``{vertical}/{type}/{device_id}`` when the payload has no
``source_id`` of its own, so a device's readings stay in order on one partition.

Delivery: QoS 1 with manual acknowledgements (the client: :mod:`sources.mqtt.client`). A
message is acknowledged to the broker (PUBACK) only after Kafka acknowledged all of its
events, in the order the messages arrived; the session is persistent (fixed client id, no
clean start), so what was not acknowledged, and what was published while qanat was away,
is delivered again when it reconnects. A crash loses nothing; a redelivery is an
at-least-once duplicate that the idempotent upsert absorbs. Messages are grouped into one
ingestion per vertical/type and ``ingestion_window_s``; each ingestion's summary goes to
the ingestions topic once all of its events are in Kafka.

>>> import asyncio                                                       # doctest: +SKIP
>>> source = MqttSource(MqttSourceSettings(url="mqtt://127.0.0.1:1883"), KafkaSettings())
>>> stop = asyncio.Event()                                               # doctest: +SKIP
>>> asyncio.run(source.run(stop))   # until stop.set(), e.g. on SIGTERM   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.core import metrics
from pipelines.core.config import KafkaSettings
from pipelines.core.errors import FatalError, RetriableError
from pipelines.core.records import RawEvent
from sources.base import ingestion_summary
from sources.mqtt.client import clean_start, connect_properties, new_client, subscriptions
from sources.mqtt.events import SOURCE_NAME, Ingestion, IngestionWindows, message_events
from sources.mqtt.settings import MqttSourceSettings, MqttTopic
from sources.publisher import KafkaPublisher

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["MqttSource", "MqttSourceSettings", "MqttTopic", "message_events"]

logger = logging.getLogger(__name__)
# CONNACK reason codes that no retry can cure: stop with the broker's reason.
FATAL_CONNACK = {
    "Unsupported protocol version",
    "Client identifier not valid",
    "Bad user name or password",
    "Not authorized",
    "Banned",
    "Bad authentication method",
}
RETRY_MAX_S = 30.0


@dataclass
class Received:
    """One MQTT message on its way to Kafka; acknowledged once ``stored``."""

    mid: int
    qos: int
    connection: int
    events: Sequence[RawEvent]
    ingestion: Ingestion | None
    stored: bool = False


class MqttSource:
    """Subscribes to the configured topic patterns and publishes every message's events to
    the raw topic, acknowledging each message once Kafka has them (see the module doc).

    Run it with :meth:`run` in an event loop until ``stop`` is set; paho-mqtt's network
    thread receives, and hands each message to the loop.
    """

    def __init__(
        self,
        settings: MqttSourceSettings,
        kafka: KafkaSettings,
        publisher: KafkaPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self._publisher = publisher
        self._windows = IngestionWindows(settings.ingestion_window_s)
        self._order: deque[Received] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection = 0  # bumped at every connect and disconnect
        self._connected = False
        self._subscribed = False
        self._closing = False
        self._fatal: FatalError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: Client | None = None

    # --- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, shutdown_timeout_s: float = 20.0) -> None:
        """Receive and publish until ``stop`` is set; then stop intake, finish what is in
        flight (for up to ``shutdown_timeout_s``), and disconnect, keeping the session.
        Raises FatalError when the broker refuses the connection for good."""
        self._loop, self._stop = asyncio.get_running_loop(), stop
        own_publisher = self._publisher is None
        publisher = self._publisher or KafkaPublisher(self.kafka, self.settings.delivery_timeout_s)
        self._publisher = publisher
        client = self._client = self._make_client()
        client.connect_async(
            self.settings.host,
            self.settings.port,
            self.settings.keepalive_s,
            clean_start=clean_start(self.settings),
            properties=connect_properties(self.settings),
        )
        client.loop_start()  # paho's thread: connects, reconnects with backoff, receives
        sealer = asyncio.create_task(self._seal_windows())
        try:
            await stop.wait()
        finally:
            self._closing = True
            sealer.cancel()
            logger.info("stopping: finishing %d messages in flight", self.in_flight)
            await self._drain(shutdown_timeout_s)
            client.disconnect()
            client.loop_stop()
            if own_publisher:
                publisher.close()
            logger.info("stopped; the broker keeps the session of %s", self.settings.client_id)
        if self._fatal is not None:
            raise self._fatal

    @property
    def in_flight(self) -> int:
        """Messages received and not acknowledged yet (their events not all in Kafka)."""
        return len(self._order)

    def ping(self) -> None:
        """Readiness: raise unless connected to the broker."""
        if not self._connected:
            raise ConnectionError(f"not connected to the MQTT broker at {self.settings.url}")
        if not self._subscribed:
            raise ConnectionError("connected, waiting for the broker to confirm the subscriptions")

    async def _drain(self, timeout: float) -> None:
        """Wait for the messages in flight, acknowledge them, publish the last summaries;
        what is not done within ``timeout`` is dropped here and delivered again later."""
        deadline = time.monotonic() + timeout
        await self._wait_for_tasks(deadline)
        self._acknowledge()
        for ingestion in self._windows.seal(everything=True):
            self._spawn(self._summarize(ingestion))
        await self._wait_for_tasks(deadline)
        if self._tasks:
            logger.warning("%d deliveries unfinished at shutdown", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()

    async def _wait_for_tasks(self, deadline: float) -> None:
        """Until every task is done (and those they spawned), or the deadline."""
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())

    async def _seal_windows(self) -> None:
        while True:
            await asyncio.sleep(min(self.settings.ingestion_window_s, 1.0))
            for ingestion in self._windows.seal():
                self._spawn(self._summarize(ingestion))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the paho client (made by sources.mqtt.client) ---------------------------------

    def _make_client(self) -> Client:
        client = new_client(self.settings)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    # --- paho callbacks: in paho's thread, handing over to the event loop ---------------

    def _call_in_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: shutting down
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self,
        client: Client,
        _userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._call_in_loop(self._refused, str(reason))
            return
        client.subscribe(subscriptions(self.settings))
        self._call_in_loop(self._connected_now, flags.session_present)

    def _on_connect_fail(self, _client: Client, _userdata: Any) -> None:
        logger.warning(
            "cannot reach the MQTT broker at %s (TLS or network); retrying with backoff up to %ds",
            self.settings.url,
            self.settings.reconnect_max_s,
        )

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: Any,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._call_in_loop(self._disconnected_now, str(reason))

    def _on_subscribe(
        self,
        _client: Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self._call_in_loop(self._subscribed_now, [str(r) for r in reasons if r.is_failure])

    def _on_message(self, _client: Client, _userdata: Any, message: MQTTMessage) -> None:
        self._call_in_loop(self._receive, message)

    # --- in the event loop --------------------------------------------------------------

    def _refused(self, reason: str) -> None:
        logger.error("the MQTT broker at %s refused the connection: %s", self.settings.url, reason)
        if reason in FATAL_CONNACK and self._stop is not None:
            self._fatal = FatalError(f"the MQTT broker at {self.settings.url} refused: {reason}")
            self._stop.set()

    def _connected_now(self, session_present: bool) -> None:
        self._connection += 1
        self._connected = True
        logger.info(
            "connected to %s as %s (%s session); subscribed to %s",
            self.settings.url,
            self.settings.client_id,
            "resumed" if session_present else "new",
            ", ".join(topic.pattern for topic in self.settings.topics),
        )

    def _subscribed_now(self, refused: list[str]) -> None:
        if refused:  # e.g. an ACL: the process would run but never receive anything
            self._fatal = FatalError(f"the MQTT broker refused a subscription: {refused[0]}")
            if self._stop is not None:
                self._stop.set()
            return
        self._subscribed = True

    def _disconnected_now(self, reason: str) -> None:
        self._connection += 1  # acknowledgements of the old connection are void now
        if self._connected and not self._closing:
            logger.warning("disconnected from %s (%s); reconnecting", self.settings.url, reason)
        self._connected = self._subscribed = False

    def _receive(self, message: MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: the broker delivers it again after the restart
        topic = message.topic
        route = self.settings.route(topic)
        if route is None:  # only if the broker sends what no filter asked for
            logger.warning(
                "message on %s matches no topic pattern (a subscription kept in the session "
                "from an earlier configuration?): acknowledged, not stored",
                topic,
            )
            self._finish(Received(message.mid, message.qos, self._connection, [], None, True))
            return
        if len(message.payload) > self.settings.max_payload_bytes:
            logger.error(
                "message on %s has %d bytes, over max_payload_bytes=%d: acknowledged, not stored",
                topic,
                len(message.payload),
                self.settings.max_payload_bytes,
            )
            metrics.count("source", "invalid", route.vertical, route.type)
            metrics.count_invalid("source", route.vertical, route.type, "too_large")
            self._finish(Received(message.mid, message.qos, self._connection, [], None, True))
            return
        ingestion = self._windows.take(route.vertical, route.type)
        events = message_events(bytes(message.payload), route, topic, ingestion.id)
        received = Received(message.mid, message.qos, self._connection, events, ingestion)
        self._order.append(received)
        self._spawn(self._deliver(received))

    def _finish(self, received: Received) -> None:
        self._order.append(received)
        self._acknowledge()

    async def _deliver(self, received: Received) -> None:
        """Produce the message's events until Kafka acknowledged them all."""
        publisher, attempt = self._publisher, 0
        assert publisher is not None
        while True:
            acks = publisher.acks()
            try:
                try:
                    await publisher.produce_all(self.kafka.topics.raw, received.events, acks)
                finally:
                    await publisher.wait(acks)
                break
            except RetriableError as exc:
                attempt += 1
                delay = min(RETRY_MAX_S, 0.5 * 2**attempt)
                logger.warning("Kafka did not take a message (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        received.stored = True
        ingestion = received.ingestion
        if ingestion is not None:
            ingestion.pending -= 1
            ingestion.accepted += len(received.events)
            if ingestion.finished:
                self._spawn(self._summarize(ingestion))
        self._acknowledge()

    def _acknowledge(self) -> None:
        """PUBACK the stored messages at the head of the arrival order (of this
        connection: a message of an earlier one is being delivered again)."""
        client = self._client
        while self._order:
            head = self._order[0]
            if head.connection != self._connection:
                self._order.popleft()
            elif head.stored:
                self._order.popleft()
                if head.qos > 0 and client is not None:
                    client.ack(head.mid, head.qos)
            else:
                return

    async def _summarize(self, ingestion: Ingestion) -> None:
        if not ingestion.accepted:
            return
        publisher = self._publisher
        assert publisher is not None
        summary = ingestion_summary(
            ingestion.id, ingestion.vertical, ingestion.type, SOURCE_NAME, ingestion.accepted
        )
        try:
            await publisher.publish(self.kafka.topics.ingestions, [summary])
        except RetriableError as exc:
            logger.warning("summary of ingestion %s not published: %s", ingestion.id, exc)
