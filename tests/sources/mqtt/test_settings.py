"""The MQTT source's settings, topic patterns and payload splitting (pure logic)."""

from __future__ import annotations

import doctest
import time
from pathlib import Path

import orjson
import pytest

import sources.mqtt.client
import sources.mqtt.events
import sources.mqtt.settings
import sources.mqtt.source
from pipelines.core.config import load
from pipelines.core.errors import ConfigError
from sources.mqtt.events import IngestionWindows, message_events, split_payload
from sources.mqtt.settings import MqttSourceSettings, MqttTopic, Route


def test_default_topics_take_vertical_type_and_an_optional_device() -> None:
    settings = MqttSourceSettings()
    assert [topic.filter for topic in settings.topics] == ["qanat/+/+", "qanat/+/+/+"]
    assert settings.route("qanat/shop/product") == Route("shop", "product", None)
    assert settings.route("qanat/plant/temp/dev-7") == Route("plant", "temp", "dev-7")
    assert settings.route("qanat/plant/temp/dev-7/extra") is None
    assert settings.route("other/plant/temp") is None


def test_fixed_vertical_and_type_with_wildcards() -> None:
    topic = MqttTopic(pattern="site/+/{device_id}/#", vertical="plant", type="reading")
    assert topic.filter == "site/+/+/#"
    assert topic.match("site/a/dev-1/x/y") == Route("plant", "reading", "dev-1")
    assert topic.match("site/a/dev-1") == Route("plant", "reading", "dev-1")
    assert topic.match("site/a") is None


@pytest.mark.parametrize(
    ("pattern", "fields", "problem"),
    [
        ("qanat/{type}", {}, "vertical"),
        ("qanat/{vertical}/{type}", {"vertical": "shop"}, "exactly one"),
        ("a/#/b", {"vertical": "v", "type": "t"}, "'#' must be the last"),
        ("a/dev{device_id}", {"vertical": "v", "type": "t"}, "whole level"),
        ("$SYS/x", {"vertical": "v", "type": "t"}, "broker's own"),
        ("a/{device_id}/{device_id}", {"vertical": "v", "type": "t"}, "more than once"),
        ("a/b", {"vertical": "Bad", "type": "t"}, "must match"),
    ],
)
def test_bad_patterns_are_refused(pattern: str, fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MqttTopic(pattern=pattern, **fields)


def test_topics_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = ["qanat/{vertical}/{type}", {"pattern": "p/{device_id}", "vertical": "p", "type": "t"}]
    monkeypatch.setenv("QANAT_MQTT_TOPICS", orjson.dumps(topics).decode())
    monkeypatch.setenv("QANAT_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("QANAT_MQTT_USERNAME", "device")
    settings = load(MqttSourceSettings)
    assert settings.route("p/d1") == Route("p", "t", "d1")
    assert settings.password is not None and "s3cret" not in repr(settings)


def test_url_and_tls_options_are_validated(tmp_path: Path) -> None:
    assert MqttSourceSettings(url="mqtts://broker.example").port == 8883
    assert MqttSourceSettings(url="mqtt://h:1999").port == 1999
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert MqttSourceSettings(url="mqtts://h", tls_ca_file=ca).tls
    cases = {
        "scheme must be": {"url": "http://h"},
        "not in the URL": {"url": "mqtt://u:p@h"},
        "need an mqtts:// url": {"url": "mqtt://h", "tls_ca_file": ca},
        "no such file": {"url": "mqtts://h", "tls_ca_file": tmp_path / "missing.pem"},
        "tls_key_file needs tls_cert_file": {"url": "mqtts://h", "tls_key_file": ca},
        "a password needs a username": {"password": "p"},
    }
    for problem, fields in cases.items():
        with pytest.raises(ConfigError, match=problem):
            load(MqttSourceSettings, **fields)


def test_payloads_split_into_events() -> None:
    assert split_payload(b'{"name": "a"}') == [(b'{"name": "a"}', {"name": "a"})]
    assert split_payload(b"[1, {}]") == [(b"1", 1), (b"{}", {})]
    assert split_payload(b"[]") == []
    assert split_payload(b"\xff") == [(b"\xff", None)]
    route = Route("plant", "temp", "dev-1")
    own, device, bad = message_events(
        b'[{"source_id": "own"}, {"name": "x"}, 3]', route, "qanat/plant/temp/dev-1", "i1"
    )
    assert (own.key, device.key, bad.key) == ("plant/temp/own", "plant/temp/dev-1", device.key)
    headers = dict(device.headers)
    assert headers["qanat.device_id"] == b"dev-1"
    assert headers["qanat.mqtt.topic"] == b"qanat/plant/temp/dev-1"
    assert headers["qanat.source"] == b"mqtt" and headers["qanat.ingestion_id"] == b"i1"
    (anonymous,) = message_events(b"not json", Route("a", "b", None), "qanat/a/b", "i2")
    assert anonymous.value == b"not json"
    assert anonymous.key == dict(anonymous.headers)["qanat.event_id"].decode()


def test_ingestion_windows_seal_and_finish() -> None:
    windows = IngestionWindows(0.05)
    first = windows.take("a", "b")
    assert windows.take("c", "d") is not first
    first.pending -= 1
    assert windows.seal() == []  # not expired yet
    time.sleep(0.06)
    second = windows.take("a", "b")  # a new window; the old one is sealed and finished
    assert second is not first
    assert first.finished
    assert windows.seal() == [first]  # ("c", "d") expired too, but its message is pending
    assert windows.seal(everything=True) == []
    assert second.sealed and not second.finished  # finished by its last message


def test_docstring_examples_run() -> None:
    for module in (
        sources.mqtt.settings,
        sources.mqtt.events,
        sources.mqtt.client,
        sources.mqtt.source,
    ):
        assert doctest.testmod(module).failed == 0, module.__name__
