"""The paho-mqtt client of the MQTT source, as its settings describe it.

:func:`new_client` makes the client the source loop (:mod:`sources.mqtt.source`) runs:
the protocol version, a fixed client id with a persistent session and manual
acknowledgements (a message is acknowledged only once Kafka has its events), the
credentials, TLS and the reconnection backoff. :func:`clean_start` and
:func:`connect_properties` are what it connects with, :func:`subscriptions` what it
subscribes to once connected. paho-mqtt (the ``[mqtt]`` extra) is imported when used.

>>> settings = MqttSourceSettings(url="mqtt://127.0.0.1:1883", protocol="3.1.1")
>>> subscriptions(settings)
[('qanat/+/+', 1), ('qanat/+/+/+', 1)]
>>> clean_start(settings), connect_properties(settings)
(False, None)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import ConfigError
from sources.mqtt.settings import MqttSourceSettings

if TYPE_CHECKING:
    from paho.mqtt.client import Client
    from paho.mqtt.properties import Properties


def is_mqtt5(settings: MqttSourceSettings) -> bool:
    return settings.protocol == "5"


def new_client(settings: MqttSourceSettings) -> Client:
    """A client for ``settings``, not connected yet and without callbacks."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    mqtt5 = is_mqtt5(settings)
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=None if mqtt5 else False,
        protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    client.enable_logger(logging.getLogger("paho.mqtt"))
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        configure_tls(client, settings)
    return client


def configure_tls(client: Client, settings: MqttSourceSettings) -> None:
    try:
        client.tls_set(
            ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
            certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"QANAT_MQTT_TLS_*: cannot load the TLS files: {exc}") from None
    client.tls_insecure_set(settings.tls_insecure)


def clean_start(settings: MqttSourceSettings) -> bool:
    return is_mqtt5(settings) and settings.session_expiry_s == 0


def connect_properties(settings: MqttSourceSettings) -> Properties | None:
    if not is_mqtt5(settings):
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = settings.session_expiry_s
    properties.ReceiveMaximum = settings.max_inflight
    return properties


def subscriptions(settings: MqttSourceSettings) -> list[tuple[str, Any]]:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    filters = list(dict.fromkeys(topic.filter for topic in settings.topics))
    if not is_mqtt5(settings):
        return [(topic_filter, settings.qos) for topic_filter in filters]
    # Retained messages only on a new subscription, not again at every reconnection.
    options = SubscribeOptions(
        qos=settings.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
    )
    return [(topic_filter, options) for topic_filter in filters]
