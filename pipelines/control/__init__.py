"""The control plane's HTTP routers: schemas and the console (app), ingestions, their
errors and the records reader (records), live feeds (live), and the DLQ over HTTP (dlq).

It imports pipelines.core, the transform's registry and pipelines.dlq, never sources or
sinks: the readers it needs are protocols in pipelines.core.records, which the sinks implement
and pipelines.cli wires.
"""
