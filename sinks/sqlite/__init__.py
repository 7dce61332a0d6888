"""The SQLite store, the embedded default: the records sink (sink), the errors table, and
the reader the control plane uses (reader). It imports sinks.base and pipelines.core.
"""
