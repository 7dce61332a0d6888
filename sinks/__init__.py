"""qanat sinks: upsert normalized records into a datastore (design.md, "Layout").

Shared by every store: base (batching, dedupe, the version guard, the three error kinds),
deadletters (where a refused row goes), errors and errorstore (the errors table's writer
and reader interface), ingestions and progress (per-ingestion counts). One sub-package per
store: postgres, sqlite. Sinks import pipelines.core and never sources; the two stores
never import each other.
"""
