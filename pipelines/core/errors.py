"""The three kinds of error qanat keeps apart.

* :class:`FatalError` - stop the process with one clear message (bad config, bad
  credentials, a missing tool).
* :class:`RetriableError` - a dependency is unavailable for now: back off, commit nothing.
* :class:`InvalidRecordError` - this record cannot be processed: it goes to the DLQ with
  a stage, a reason and details, and nothing else is affected.
"""

from __future__ import annotations

from typing import Any


class QanatError(Exception):
    """Base of qanat's own errors."""


class FatalError(QanatError):
    """Stop: the process cannot do useful work until a person changes something."""


class ConfigError(FatalError):
    """Settings are missing or invalid; the message lists every problem."""


class RetriableError(QanatError):
    """Temporary: retry after ``retry_after`` seconds; nothing was committed."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRecordError(QanatError):
    """One record is bad; it belongs in the DLQ at ``stage`` with ``reason``."""

    def __init__(self, stage: str, reason: str, details: list[dict[str, Any]] | None = None):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.details = details or []
