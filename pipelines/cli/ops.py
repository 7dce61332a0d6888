"""``qanat topics create|check``: the qanat topics on any Kafka (local, managed, a cluster).

``create`` makes the topics that do not exist yet, with ``QANAT_KAFKA_PARTITIONS`` and
``QANAT_KAFKA_REPLICATION_FACTOR`` (or the flags); ``check`` reports, for each topic,
whether it exists, its partitions, replication factor and ``cleanup.policy`` (compact for
the schemas and ingestions topics), and exits 1 on any mismatch. The schemas topic always
has one partition: every transform replica reads the registry in one order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from pipelines.cli.base import fatal_errors
from pipelines.core.config import KafkaSettings, load
from pipelines.core.errors import FatalError
from pipelines.core.topics import TopicNames, ensure_topics

topics_app = typer.Typer(
    help="Create or check the qanat topics (partitions, replication, cleanup.policy).",
    no_args_is_help=True,
)

PartitionsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Partitions of the data topics (default: QANAT_KAFKA_PARTITIONS)."),
]
ReplicationOption = Annotated[
    int | None,
    typer.Option(
        "--replication-factor",
        min=1,
        help="Replication factor (default: QANAT_KAFKA_REPLICATION_FACTOR).",
    ),
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for Kafka.")]


@dataclass(frozen=True)
class TopicSpec:
    """What one qanat topic should look like."""

    name: str
    partitions: int
    replication_factor: int
    cleanup_policy: str


@dataclass(frozen=True)
class TopicState:
    """What one topic looks like on the cluster (None: it does not exist)."""

    partitions: int
    replication_factor: int
    cleanup_policy: str


def expected_topics(names: TopicNames, partitions: int, replication_factor: int) -> list[TopicSpec]:
    """The qanat topics as :func:`pipelines.core.topics.ensure_topics` creates them."""
    compacted = {names.schemas, names.ingestions}
    return [
        TopicSpec(
            name,
            1 if name == names.schemas else partitions,
            replication_factor,
            "compact" if name in compacted else "delete",
        )
        for name in names.all()
    ]


def describe_topics(
    client_config: dict[str, Any], names: list[str], timeout: float
) -> dict[str, TopicState | None]:
    """Partitions, replication factor and cleanup.policy of each named topic."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(client_config)
    try:
        metadata = admin.list_topics(timeout=timeout).topics
        present = [name for name in names if name in metadata and metadata[name].error is None]
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
        configs = admin.describe_configs(resources, request_timeout=timeout) if present else {}
        policies = {
            resource.name: future.result(timeout=timeout)["cleanup.policy"].value
            for resource, future in configs.items()
        }
    except KafkaException as exc:
        raise FatalError(f"cannot describe the topics: {exc.args[0].str()}") from None
    states: dict[str, TopicState | None] = dict.fromkeys(names)
    for name in present:
        partitions = metadata[name].partitions.values()
        replication = min(len(partition.replicas) for partition in partitions)
        states[name] = TopicState(len(partitions), replication, policies[name])
    return states


def mismatches(spec: TopicSpec, state: TopicState | None) -> list[str]:
    """What differs between a topic and its spec (empty: it is as it should be)."""
    if state is None:
        return ["missing"]
    wanted = {
        "partitions": (spec.partitions, state.partitions),
        "replication.factor": (spec.replication_factor, state.replication_factor),
        "cleanup.policy": (spec.cleanup_policy, state.cleanup_policy),
    }
    return [f"{key} {got} (want {want})" for key, (want, got) in wanted.items() if want != got]


def _report(kafka: KafkaSettings, specs: list[TopicSpec], timeout: float) -> int:
    """Print one line per topic; the number of topics that do not match their spec."""
    states = describe_topics(kafka.client(), [spec.name for spec in specs], timeout)
    width = max(len(spec.name) for spec in specs)
    bad = 0
    for spec in specs:
        state = states[spec.name]
        problems = mismatches(spec, state)
        bad += bool(problems)
        if state is None:
            typer.echo(f"{spec.name:<{width}}  MISSING")
            continue
        line = (
            f"{spec.name:<{width}}  {'ok' if not problems else 'MISMATCH':<8}  "
            f"partitions={state.partitions} replication.factor={state.replication_factor} "
            f"cleanup.policy={state.cleanup_policy}"
        )
        typer.echo(line + (f"  ({'; '.join(problems)})" if problems else ""))
    return bad


def _specs(
    partitions: int | None, replication: int | None
) -> tuple[KafkaSettings, list[TopicSpec]]:
    kafka = load(KafkaSettings)
    specs = expected_topics(
        kafka.topics, partitions or kafka.partitions, replication or kafka.replication_factor
    )
    return kafka, specs


@topics_app.command("create")
@fatal_errors
def topics_create(
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
    timeout: TimeoutOption = 30.0,
) -> None:
    """Create the qanat topics that do not exist yet, then report them (exit 1 if an
    existing topic differs from what was asked)."""
    from confluent_kafka import KafkaException

    kafka, specs = _specs(partitions, replication_factor)
    data = next(spec for spec in specs if spec.name == kafka.topics.raw)
    try:
        ensure_topics(
            kafka.client(), kafka.topics, data.partitions, data.replication_factor, timeout
        )
    except KafkaException as exc:
        raise FatalError(f"cannot create the topics: {exc.args[0].str()}") from None
    raise typer.Exit(1 if _report(kafka, specs, timeout) else 0)


@topics_app.command("check")
@fatal_errors
def topics_check(
    partitions: PartitionsOption = None,
    replication_factor: ReplicationOption = None,
    timeout: TimeoutOption = 30.0,
) -> None:
    """Report each qanat topic (exists, partitions, replication, cleanup.policy); exit 1
    on a missing topic or any mismatch."""
    kafka, specs = _specs(partitions, replication_factor)
    bad = _report(kafka, specs, timeout)
    if bad:
        typer.echo(f"{bad} topic(s) do not match; `qanat topics create` makes missing ones")
    raise typer.Exit(1 if bad else 0)
