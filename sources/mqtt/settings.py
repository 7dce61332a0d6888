"""Settings of the MQTT source, and the topic patterns that map MQTT topics to records.

A pattern is an MQTT topic whose levels may be placeholders: ``{vertical}``, ``{type}``
and ``{device_id}`` each match one level and name what it carries; ``+`` and a final ``#``
are the usual wildcards. The broker subscription is the pattern with every placeholder
as ``+``.

>>> topic = MqttTopic(pattern="qanat/{vertical}/{type}/{device_id}")
>>> topic.filter
'qanat/+/+/+'
>>> topic.match("qanat/factory/temperature/sensor-7")
Route(vertical='factory', type='temperature', device_id='sensor-7')
>>> MqttTopic(pattern="plant/+/temp", vertical="factory", type="reading").match("plant/a/temp")
Route(vertical='factory', type='reading', device_id=None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from pipelines.core.config import QanatSettings
from pipelines.core.records import check_identifier

PLACEHOLDERS = ("{vertical}", "{type}", "{device_id}")
SCHEMES = {"mqtt": 1883, "mqtts": 8883}


class Route(NamedTuple):
    """Where one MQTT message goes: its vertical and type, and its device if the topic
    names one."""

    vertical: str
    type: str
    device_id: str | None


class MqttTopic(BaseModel):
    """One subscription: a topic pattern and how its messages map to vertical and type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(
        description="MQTT topic levels separated by '/': literal levels, '+' (any one "
        "level), a final '#' (any rest), and the placeholders {vertical}, {type} and "
        "{device_id}, each one whole level. A {device_id} becomes the record's source_id "
        "when the payload has none.",
        examples=["qanat/{vertical}/{type}/{device_id}", "plant/+/{device_id}/temperature"],
    )
    vertical: str | None = Field(
        None, description="Vertical of every message on this topic (when no {vertical} level)."
    )
    type: str | None = Field(
        None, description="Type of every message on this topic (when no {type} level)."
    )

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str) -> str:
        if not pattern.strip():
            raise ValueError("a topic pattern must not be blank")
        if pattern.startswith("$"):
            raise ValueError("topics starting with '$' are the broker's own ($SYS, $share)")
        levels = pattern.split("/")  # empty levels are legal MQTT: a//b
        for index, level in enumerate(levels):
            if level in PLACEHOLDERS or level in ("+", ""):
                continue
            if level == "#":
                if index != len(levels) - 1:
                    raise ValueError("'#' must be the last level")
                continue
            if any(char in level for char in "+#{}"):
                raise ValueError(
                    f"level {level!r}: wildcards and placeholders must be a whole level "
                    f"(placeholders: {', '.join(PLACEHOLDERS)})"
                )
        for placeholder in PLACEHOLDERS:
            if levels.count(placeholder) > 1:
                raise ValueError(f"{placeholder} appears more than once")
        return pattern

    @field_validator("vertical", "type")
    @classmethod
    def _identifier(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_identifier(info.field_name, value)

    @model_validator(mode="after")
    def _vertical_and_type(self) -> MqttTopic:
        levels = self.pattern.split("/")
        for name in ("vertical", "type"):
            in_topic = "{" + name + "}" in levels
            fixed = getattr(self, name) is not None
            if in_topic == fixed:
                raise ValueError(
                    f"{self.pattern!r}: give the {name} either as a {{{name}}} level or as "
                    f"the {name} field, exactly one of them"
                )
        return self

    @property
    def filter(self) -> str:
        """The MQTT topic filter subscribed to."""
        return "/".join("+" if level in PLACEHOLDERS else level for level in self._levels)

    @property
    def _levels(self) -> list[str]:
        return self.pattern.split("/")

    def match(self, topic: str) -> Route | None:
        """The route of a message on ``topic``, or None if this pattern does not match."""
        levels, topic_levels = self._levels, topic.split("/")
        captured: dict[str, str] = {}
        for index, level in enumerate(levels):
            if level == "#":
                break
            if index >= len(topic_levels):
                return None
            value = topic_levels[index]
            if level in PLACEHOLDERS:
                captured[level[1:-1]] = value
            elif level != "+" and level != value:
                return None
        else:
            if len(topic_levels) != len(levels):
                return None
        return Route(
            self.vertical or captured["vertical"],
            self.type or captured["type"],
            captured.get("device_id") or None,
        )


def _default_topics() -> list[MqttTopic]:
    return [
        MqttTopic(pattern="qanat/{vertical}/{type}"),
        MqttTopic(pattern="qanat/{vertical}/{type}/{device_id}"),
    ]


class MqttSourceSettings(QanatSettings):
    """Settings of ``qanat source mqtt``."""

    yaml_section: ClassVar[str] = "mqtt"
    model_config = SettingsConfigDict(env_prefix="QANAT_MQTT_", extra="forbid")

    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="The MQTT broker: mqtt://host[:port] (default port 1883) or "
        "mqtts://host[:port] for TLS (default port 8883). Credentials go in username and "
        "password, not in the URL.",
        examples=["mqtt://mosquitto:1883", "mqtts://broker.example.com"],
    )
    topics: list[MqttTopic] = Field(
        default_factory=_default_topics,
        description="Topic patterns to subscribe to, in order (the first match routes a "
        "message): objects {pattern, vertical, type}, or plain pattern strings. Default: "
        "qanat/{vertical}/{type} and qanat/{vertical}/{type}/{device_id}.",
        examples=[[{"pattern": "plant/{device_id}/temp", "vertical": "plant", "type": "temp"}]],
    )
    client_id: str = Field(
        "qanat-mqtt",
        min_length=1,
        max_length=128,
        description="MQTT client id. The broker keeps the persistent session (subscriptions "
        "and unacknowledged QoS 1 messages) under this id: keep it fixed across restarts, "
        "and give each concurrently running replica its own.",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version spoken to the broker."
    )
    qos: Literal[0, 1] = Field(
        1,
        description="Subscription QoS. 1: a message is acknowledged to the broker only once "
        "Kafka acknowledged its events, so nothing is lost; 0: at most once.",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=0xFFFFFFFF,
        description="MQTT 5: how long the broker keeps the session, and queues QoS 1 "
        "messages, while qanat is away. 0 starts a clean session at every connection. "
        "(MQTT 3.1.1: the session persists as the broker's configuration says.)",
    )
    username: str | None = Field(None, description="Username for the broker.")
    password: SecretStr | None = Field(None, description="Password for the broker.")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA certificates that verify the broker (mqtts); "
        "default: the system's trusted CAs.",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM client certificate, for brokers that require mutual TLS."
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file (when not in the same file)."
    )
    tls_insecure: bool = Field(
        False,
        description="Skip the check of the broker certificate's host name (development only).",
    )
    keepalive_s: int = Field(60, ge=5, le=65535, description="MQTT keep-alive interval.")
    reconnect_min_s: int = Field(
        1, ge=1, description="First delay before reconnecting after the broker went away."
    )
    reconnect_max_s: int = Field(
        60, ge=1, description="Longest delay between reconnection attempts (doubling)."
    )
    max_inflight: int = Field(
        100,
        ge=1,
        le=65535,
        description="MQTT 5 receive maximum: how many QoS 1 messages the broker sends "
        "before qanat acknowledged them (they wait in the broker beyond).",
    )
    max_payload_bytes: int = Field(
        1_000_000,
        ge=1,
        description="Payloads larger than this cannot be stored in Kafka: they are logged "
        "with their topic, counted as invalid (reason too_large) and acknowledged.",
    )
    ingestion_window_s: float = Field(
        5.0,
        gt=0,
        description="One ingestion id per vertical/type for the messages of this many "
        "seconds; its summary (accepted count) is published when the window closes.",
    )
    delivery_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long Kafka has to acknowledge a message's events before they are "
        "produced again (the MQTT message stays unacknowledged meanwhile).",
    )

    @field_validator("topics", mode="before")
    @classmethod
    def _pattern_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"pattern": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in SCHEMES:
            raise ValueError(f"the scheme must be mqtt:// or mqtts://, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("put credentials in username and password, not in the URL")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"an MQTT URL has no path or query: {url!r}")
        _ = parts.port  # raises ValueError for a bad port
        return url.strip()

    @model_validator(mode="after")
    def _consistent(self) -> MqttSourceSettings:
        problems = []
        tls_options = self.tls_ca_file or self.tls_cert_file or self.tls_key_file
        if (tls_options or self.tls_insecure) and not self.tls:
            problems.append("the tls_* options need an mqtts:// url")
        if self.tls_key_file and not self.tls_cert_file:
            problems.append("tls_key_file needs tls_cert_file")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{name}: no such file: {path}")
        if self.password is not None and self.username is None:
            problems.append("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            problems.append("reconnect_max_s must be at least reconnect_min_s")
        if not self.topics:
            problems.append("topics: subscribe to at least one topic pattern")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or SCHEMES[parts.scheme]

    def route(self, topic: str) -> Route | None:
        """The route of the first topic pattern that matches ``topic``."""
        for subscription in self.topics:
            found = subscription.match(topic)
            if found is not None:
                return found
        return None
