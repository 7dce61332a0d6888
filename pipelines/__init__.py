"""qanat core: settings, the record contract, topics, schemas and the transform stage."""

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
