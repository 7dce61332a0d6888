"""`qanat import`: CSV, NDJSON and JSON files streamed to the raw topic with a resumable
checkpoint (source), its readers, field mapping, delivery, state, Ctrl-C handling, and the
CSV fast path (csvfast). It imports the source SDK and pipelines.core.
"""
