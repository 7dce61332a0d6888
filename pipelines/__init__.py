"""qanat's pipeline parts: core (the contract every process shares), transform (the Quix
Streams stage), dlq (dead-letter tooling), control (the control plane's routes), cli (the
composition root), and the local development broker (devbroker, devbroker_jars, devmqtt).
Who may import whom: design.md, "Layout", checked by tests/test_layout.py."""

import contextlib
import warnings

# confluent-kafka's schema-registry client (imported by quixstreams) imports authlib's httpx
# integration, which warns on import; nothing in qanat uses it, so the line is only noise
# in every command's output. authlib puts an "always" filter for its own warnings first when
# its deprecation module is imported, so import that before adding ours.
with contextlib.suppress(ImportError):
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

warnings.filterwarnings("ignore", message="The httpx module is deprecated")

__version__ = "0.1.0"
