"""The raw events of MQTT messages, and the ingestions (one id per vertical/type and time
window) they are grouped into. See :mod:`sources.mqtt.source`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.core.records import RawEvent, client_source_id, new_id
from pipelines.core.topics import H_DEVICE_ID, record_key
from sources.base import build_raw_events
from sources.mqtt.settings import Route

SOURCE_NAME = "mqtt"
H_MQTT_TOPIC = "qanat.mqtt.topic"


def split_payload(payload: bytes) -> list[tuple[bytes, Any]]:
    """A payload as (value, parsed) pairs: one per element of a JSON array (each element
    re-serialized compactly), else the payload itself, untouched (parsed: None if it is
    not JSON).

    >>> split_payload(b'[{"a": 1}, {"b": 2}]')
    [(b'{"a":1}', {'a': 1}), (b'{"b":2}', {'b': 2})]
    >>> split_payload(b"not json")
    [(b'not json', None)]
    """
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return [(payload, None)]
    if isinstance(parsed, list):
        return [(orjson.dumps(element), element) for element in parsed]
    return [(payload, parsed)]


def message_events(payload: bytes, route: Route, topic: str, ingestion_id: str) -> list[RawEvent]:
    """The raw events of one MQTT message, under ``ingestion_id``.

    >>> events = message_events(b'{"name": "t"}', Route("plant", "temp", "s7"), "t/s7", "i1")
    >>> events[0].key, dict(events[0].headers)["qanat.device_id"]
    ('plant/temp/s7', b's7')
    """
    pairs = split_payload(payload)
    objects = [obj for _, obj in pairs]
    _, events = build_raw_events(
        [value for value, _ in pairs],
        route.vertical,
        route.type,
        SOURCE_NAME,
        objects,
        ingestion_id=ingestion_id,
    )
    extra = [(H_MQTT_TOPIC, topic.encode())]
    if route.device_id is None:
        return [RawEvent(event.key, event.value, [*event.headers, *extra]) for event in events]
    extra.append((H_DEVICE_ID, route.device_id.encode()))
    device_key = record_key(route.vertical, route.type, route.device_id)
    return [
        RawEvent(
            event.key if client_source_id(obj) else device_key,
            event.value,
            [*event.headers, *extra],
        )
        for event, obj in zip(events, objects, strict=True)
    ]


@dataclass
class Ingestion:
    """The messages of one vertical/type in one window: one ingestion id, one summary."""

    id: str
    vertical: str
    type: str
    opened: float
    pending: int = 0
    accepted: int = 0
    sealed: bool = False

    @property
    def finished(self) -> bool:
        return self.sealed and self.pending == 0


class IngestionWindows:
    """The open ingestion of each vertical/type; one is sealed ``window_s`` after it
    opened, and finished once its last message is in Kafka.

    >>> windows = IngestionWindows(60.0)
    >>> windows.take("shop", "product") is windows.take("shop", "product")
    True
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str], Ingestion] = {}
        self._finished: list[Ingestion] = []  # sealed with nothing pending: summarize

    def take(self, vertical: str, type_: str) -> Ingestion:
        """The current ingestion of ``vertical``/``type_``, with one more pending message."""
        ingestion = self._open.get((vertical, type_))
        if ingestion is None or self._expired(ingestion):
            if ingestion is not None:
                self._seal(ingestion)
            ingestion = Ingestion(new_id(), vertical, type_, time.monotonic())
            self._open[(vertical, type_)] = ingestion
        ingestion.pending += 1
        return ingestion

    def seal(self, everything: bool = False) -> list[Ingestion]:
        """Seal the expired ingestions (or all). Returns the sealed ones with nothing
        pending, once; one sealed with messages pending is finished by its last one."""
        for key, ingestion in list(self._open.items()):
            if everything or self._expired(ingestion):
                del self._open[key]
                self._seal(ingestion)
        finished, self._finished = self._finished, []
        return finished

    def _expired(self, ingestion: Ingestion) -> bool:
        return time.monotonic() - ingestion.opened >= self.window_s

    def _seal(self, ingestion: Ingestion) -> None:
        ingestion.sealed = True
        if ingestion.pending == 0:
            self._finished.append(ingestion)
