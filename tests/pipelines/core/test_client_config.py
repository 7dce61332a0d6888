"""Every Kafka client qanat creates gets ``KafkaSettings.client_config`` (security.protocol,
sasl.*, ssl.*), so a managed Kafka works by configuration alone.

Two checks: the client factories, called with a fake confluent-kafka class that records
its configuration; and a scan of the source tree, so that a client added later without
``kafka.client(...)`` fails here. tests/integration/test_managed_kafka.py runs the whole
pipeline against a broker that only speaks SASL.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.config import CoreSettings, KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "PLAIN",
    "sasl.username": "user",
    "sasl.password": "secret",
    "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
}
CLIENTS = {"Producer", "Consumer", "AdminClient"}
# The dev broker's start-up probe talks to the broker it started itself, on loopback.
LOCAL_ONLY = {("pipelines/devbroker.py", "metadata_answers")}


class Recorder:
    """Stands for Producer, Consumer and AdminClient: keeps each configuration."""

    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any], **_: Any) -> None:
        Recorder.configs.append(dict(config))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: 0


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import confluent_kafka
    import confluent_kafka.admin

    Recorder.configs = []
    monkeypatch.setattr(confluent_kafka, "Producer", Recorder)
    monkeypatch.setattr(confluent_kafka, "Consumer", Recorder)
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", Recorder)
    for module in (
        "sources.base",
        "sources.publisher",
        "sinks.base",
        "sinks.deadletters",
        "pipelines.transform.registry",
        "pipelines.transform.schematopic",
    ):
        for name in CLIENTS:
            monkeypatch.setattr(f"{module}.{name}", Recorder, raising=False)
    return Recorder.configs


def test_every_client_factory_passes_client_config(recorded: list[dict[str, Any]]) -> None:
    from pipelines.cli.ops import describe_topics
    from pipelines.core.ops_kafka import KafkaCheck, LagMonitor
    from pipelines.core.topics import ensure_topics
    from pipelines.transform import schematopic
    from sinks.base import KafkaDeadLetters
    from sources.publisher import KafkaPublisher

    kafka = KafkaSettings(bootstrap_servers="broker.example:9092", client_config=SECURITY)
    KafkaPublisher(kafka).close()
    KafkaDeadLetters(kafka)._get_producer()
    schematopic._reader(kafka)
    with pytest.raises(Exception):  # noqa: B017 - the fake admin returns no futures
        ensure_topics(kafka.client(), kafka.topics, 1, 1)
    with pytest.raises(Exception):  # noqa: B017 - the fake metadata has no brokers
        KafkaCheck(kafka, [], 1.0)()
    with pytest.raises(Exception):  # noqa: B017 - the fake consumer has no metadata
        LagMonitor(kafka, "g", ["t"], 1.0).measure()
    with pytest.raises(Exception):  # noqa: B017
        describe_topics(kafka.client(), ["t"], 1.0)
    assert len(recorded) == 8  # the dead-letter writer also asks the DLQ topic its limit
    for config in recorded:
        assert config["bootstrap.servers"] == "broker.example:9092"
        assert SECURITY.items() <= config.items(), config


def test_the_registry_producer_passes_client_config(recorded: list[dict[str, Any]]) -> None:
    from pipelines.transform.registry import SchemaRegistry
    from pipelines.transform.schematopic import SchemaVersion

    kafka = KafkaSettings(bootstrap_servers="broker.example:9092", client_config=SECURITY)
    entry = SchemaVersion("shop", "product", 1, {"type": "object"}, "2026-01-01T00:00:00Z")
    with pytest.raises(Exception):  # noqa: B017 - the fake producer reports no delivery
        SchemaRegistry(kafka, timeout=0.1)._produce("shop/product/00000001/p1", entry)
    assert recorded and SECURITY.items() <= recorded[0].items()


def test_quix_applications_get_the_security_settings(tmp_path: Path) -> None:
    from pipelines.core.quixapp import quix_application

    kafka = KafkaSettings(
        bootstrap_servers="broker.example:9092",
        client_config={**SECURITY, "session.timeout.ms": "6000"},
    )
    app = quix_application(kafka, CoreSettings(data_dir=tmp_path), "g")
    config = app.config
    connection = config.broker_address.as_librdkafka_dict()
    # Quix spells two of them its own way (both are librdkafka's names too)
    assert connection["security.protocol"].upper() == "SASL_SSL"
    assert connection["sasl.mechanism"] == "PLAIN"
    for name in ("sasl.username", "sasl.password", "ssl.ca.location"):
        assert connection[name] == SECURITY[name]
    # settings Quix has no field for reach its consumer and producer as extra config
    assert config.consumer_extra_config["session.timeout.ms"] == "6000"
    assert config.producer_extra_config["session.timeout.ms"] == "6000"


def _client_calls() -> list[tuple[str, str, ast.Call]]:
    found = []
    for package in ("pipelines", "sources", "sinks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(function):
                    if (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Name)
                        and node.func.id in CLIENTS
                    ):
                        found.append((str(path.relative_to(ROOT)), function.name, node))
    return found


def _from_client_settings(call: ast.Call, source: str) -> bool:
    """The configuration is ``<kafka>.client(...)``, a value built from it, or a
    ``client_config`` argument (whose callers pass ``kafka.client()``)."""
    if not call.args:
        return False
    arg = ast.get_source_segment(source, call.args[0]) or ""
    return ".client(" in arg or arg in {"client_config", "self._config"}


def test_no_client_is_created_without_the_settings() -> None:
    calls = _client_calls()
    assert len(calls) >= 8
    sources = {path: (ROOT / path).read_text(encoding="utf-8") for path, _, _ in calls}
    bad = [
        f"{path}:{call.lineno} in {function}()"
        for path, function, call in calls
        if (path, function) not in LOCAL_ONLY and not _from_client_settings(call, sources[path])
    ]
    assert not bad, f"Kafka clients without KafkaSettings.client(): {bad}"
    # self._config of the dead-letter writer is built from kafka.client() too
    writer = (ROOT / "sinks" / "deadletters.py").read_text(encoding="utf-8")
    assert "**kafka.client()}" in writer
