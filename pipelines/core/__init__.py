"""The contract every qanat process shares: settings (config), the record contract
(records), topic and header names (topics), the dead-letter header contract (deadletter), the
three kinds of error (errors), metrics, JSON logs, the ops endpoints (ops), free ports, the
Quix Streams application factory and the shared HTTP error model with its OpenAPI docs
(httperrors).

It imports nothing else of the project: sources, sinks, the transform and the tools all build
on it (design.md, "Layout").
"""
