"""The PostgreSQL store: the records sink with COPY and a version-guarded upsert (sink), its
connections, write transaction and SQLSTATE classification (conn), the errors, ingestions
and progress tables, and the reader the control plane uses (reader). It imports sinks.base
and pipelines.core.
"""
