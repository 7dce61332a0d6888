"""qanat core: settings, the record contract, topics, schemas and the transform stage."""

__version__ = "0.1.0"
