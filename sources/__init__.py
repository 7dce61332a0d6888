"""qanat sources: each publishes raw events to the raw topic (design.md, "Layout").

The source SDK sits here: base (Source, PullSource and their settings), publisher (the
acknowledged Kafka producer), retry, schedule, cursor (keyset cursors), pull_settings and
runner (``qanat collect``). Each connector is one module (rest, graphql, neo4j) or one
sub-package (http, mqtt, files, sql). Sources import pipelines.core and never sinks: the
two meet only through Kafka. GraphQL builds on the REST pull source; no other connector
imports another.
"""
