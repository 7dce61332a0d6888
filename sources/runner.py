"""Running pull sources: finding a connector by its kind, and the Quix Streams Application
that runs a set of sources, each in its own process, all producing to the raw topic.

A connector kind is registered in the ``qanat.sources`` entry-point group of a package's
``pyproject.toml`` (``rest = "sources.rest:RestSource"``), so a new connector is a new module
plus one line there, in qanat or in any installed package; ``module:Class`` works too.

>>> load_connector("sources.base:PullSource").kind
'custom'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from pipelines.core.config import CoreSettings, KafkaSettings
from pipelines.core.topics import ensure_topics
from sources.base import PullSource

#: The entry-point group where connector kinds are registered.
ENTRY_POINT_GROUP = "qanat.sources"


def load_connector(kind: str) -> type[PullSource[Any]]:
    """The connector class of a ``kind``: a name registered in the ``qanat.sources``
    entry-point group (``rest = "sources.rest:RestSource"`` in a package's pyproject), or
    ``module:Class``. Raises LookupError (unknown kind) or ImportError (missing extra)."""
    if ":" in kind:
        module_name, _, attribute = kind.partition(":")
        found: Any = getattr(importlib.import_module(module_name), attribute, None)
        if found is None:
            raise LookupError(f"module {module_name} has no {attribute}")
    else:
        points = entry_points(group=ENTRY_POINT_GROUP, name=kind)
        if not points:
            known = ", ".join(sorted(connector_kinds())) or "none installed"
            raise LookupError(f"unknown kind {kind!r} (known: {known}; or module:Class)")
        found = next(iter(points)).load()
    if not (isinstance(found, type) and issubclass(found, PullSource)):
        raise LookupError(f"{kind} is not a PullSource subclass")
    return found


def connector_kinds() -> dict[str, str]:
    """Every registered connector kind and where it lives."""
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def run_sources(
    sources: Sequence[PullSource[Any]],
    kafka: KafkaSettings,
    core: CoreSettings,
    group: str = "collect",
    shutdown_timeout_s: float | None = None,
) -> None:
    """Run pull sources until SIGTERM/SIGINT (or, with ``once``, until each polled once):
    one Quix Streams Application, each source in its own process, every one producing to
    the raw topic. Their cursors live in changelog topics of consumer group
    ``<prefix>.<group>``, so the same source name resumes wherever it runs."""
    from pipelines.core.quixapp import quix_application

    ensure_topics(kafka.client(), kafka.topics, kafka.partitions, kafka.replication_factor)
    # Quix creates the sources' changelog topics; the qanat topics exist already.
    app = quix_application(kafka, core, group, auto_create_topics=True)
    for source in sources:
        source.log_level = core.log_level
        # One Topic object per source: Quix refuses to give two sources the same one.
        topic = app.topic(kafka.topics.raw, key_serializer="str", value_serializer="bytes")
        app.add_source(source, topic)
    if shutdown_timeout_s is None:
        app.run()
    else:  # a stop that takes longer than that exits with status 1
        from pipelines.core.ops import run_quix

        run_quix(app, shutdown_timeout_s)
