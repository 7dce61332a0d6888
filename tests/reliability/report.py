"""Render the reliability report from the recorded scenario runs:
``.venv/bin/python -m tests.reliability.report``. It goes to
``$QANAT_REPORT_DIR/RELIABILITY.md`` (default ``.qanat/reports/``), or with
``QANAT_WRITE_RELIABILITY=1`` to the tracked ``RELIABILITY.md``; either way merged into
the report there (the rows of the scenarios without a recorded run are kept)."""

from __future__ import annotations

from tests.reliability.results import write_report

if __name__ == "__main__":
    print(f"wrote {write_report()}")
