"""Render ``RELIABILITY.md`` from the recorded scenario runs:
``.venv/bin/python -m tests.reliability.report``."""

from __future__ import annotations

from tests.reliability.results import write_report

if __name__ == "__main__":
    print(f"wrote {write_report()}")
