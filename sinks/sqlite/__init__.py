"""The SQLite store, the embedded default: the records sink (sink), its connections, write
transaction and result-code classification (conn), the errors, ingestions and progress
tables, identifier quoting (sqlquote), and the reader the control plane uses (reader). It
imports sinks.base and pipelines.core.
"""
