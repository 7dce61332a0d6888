"""``qanat topics create|check`` against the real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.cli.ops import TopicSpec, TopicState, expected_topics, mismatches
from pipelines.core.topics import TopicNames


def test_expected_topics() -> None:
    specs = {spec.name: spec for spec in expected_topics(TopicNames("q"), 6, 3)}
    assert specs["q.raw"] == TopicSpec("q.raw", 6, 3, "delete")
    assert specs["q.schemas"] == TopicSpec("q.schemas", 1, 3, "compact")
    assert specs["q.ingestions"].cleanup_policy == "compact"


def test_mismatches() -> None:
    spec = TopicSpec("q.raw", 4, 1, "delete")
    assert mismatches(spec, None) == ["missing"]
    assert mismatches(spec, TopicState(4, 1, "delete")) == []
    assert mismatches(spec, TopicState(2, 1, "compact")) == [
        "partitions 2 (want 4)",
        "cleanup.policy compact (want delete)",
    ]


@pytest.fixture
def env(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> TopicNames:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("QANAT_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("QANAT_KAFKA_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("QANAT_KAFKA_PARTITIONS", "2")
    return TopicNames(prefix)


@pytest.mark.integration
def test_create_then_check(env: TopicNames) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["topics", "check"])
    assert missing.exit_code == 1
    assert missing.output.count("MISSING") == 5

    created = runner.invoke(app, ["topics", "create", "--partitions", "4"])
    assert created.exit_code == 0, created.output
    lines = {line.split()[0]: line for line in created.output.splitlines()}
    assert "ok" in lines[env.raw] and "partitions=4" in lines[env.raw]
    assert "partitions=1" in lines[env.schemas] and "cleanup.policy=compact" in lines[env.schemas]
    assert "cleanup.policy=compact" in lines[env.ingestions]
    assert "replication.factor=1" in lines[env.dlq]

    assert runner.invoke(app, ["topics", "check", "--partitions", "4"]).exit_code == 0
    stale = runner.invoke(app, ["topics", "check"])  # the settings say 2 partitions
    assert stale.exit_code == 1
    assert "partitions 4 (want 2)" in stale.output


@pytest.mark.integration
def test_check_finds_a_wrong_cleanup_policy(env: TopicNames, kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    wrong = NewTopic(env.schemas, num_partitions=1, replication_factor=1)  # not compacted
    admin.create_topics([wrong])[env.schemas].result(timeout=30)
    result = CliRunner().invoke(app, ["topics", "create"])
    assert result.exit_code == 1
    assert "cleanup.policy delete (want compact)" in result.output
