"""Throughput and latency benchmarks, each reporting a ratio against a baseline in the same run.

Run them with ``python -m benchmarks.run`` (see :mod:`benchmarks.run`); results land in
``benchmarks/results/<name>.json`` and the summary in ``benchmarks/RESULTS.md``.
"""
