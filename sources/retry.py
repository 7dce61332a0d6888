"""Retrying what a pull source asks a remote system, the same way for every connector.

* 429 and 5xx: retried with exponential backoff; a ``Retry-After`` header (seconds or an
  HTTP date) is honoured: the next attempt waits at least that long.
* Network errors (connect, read, timeouts): retried the same way.
* 400: the request or the data it names is bad; :class:`BadDataError`, which a connector
  logs and skips (retrying would give the same answer).
* Any other 4xx (401, 403, 404, ...): :class:`~pipelines.core.errors.FatalError`: a person has
  to fix the URL or the credentials.

>>> policy = RetrySettings(initial_delay=1, multiplier=2, max_delay=5, jitter=0)
>>> [policy.delay(n) for n in (1, 2, 3, 4)]
[1.0, 2.0, 4.0, 5.0]
>>> policy.delay(1, retry_after=30)
30.0
>>> parse_retry_after("7")
7.0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from pipelines.core.errors import FatalError, QanatError, RetriableError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Waits ``seconds`` unless the source is stopping; returns True when it was stopped.
Wait = Callable[[float], bool]


def sleep_wait(seconds: float) -> bool:
    """A :data:`Wait` that cannot be interrupted (for scripts and tests)."""
    time.sleep(seconds)
    return False


class SourceStoppedError(QanatError):
    """The source was asked to stop while it waited; nothing more is done."""


class BadDataError(QanatError):
    """The remote system rejected a request as bad (HTTP 400): log it and skip it."""


class RetryLaterError(RetriableError):
    """A temporary failure of the remote system; ``retry_after`` is what it asked for
    (0 when it did not say)."""


class RetrySettings(BaseModel):
    """How often and how patiently a failed request is tried again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(5, ge=1, description="Tries per request, the first one included.")
    initial_delay: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    multiplier: float = Field(2.0, ge=1, description="Each retry waits this many times longer.")
    max_delay: float = Field(60.0, ge=0, description="The longest backoff between two tries.")
    jitter: float = Field(
        0.1, ge=0, le=1, description="Random share added to each backoff, so clients spread."
    )

    def delay(self, attempt: int, retry_after: float = 0.0) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based); never less than
        what the server asked for in ``Retry-After``."""
        backoff = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        backoff *= 1 + random.uniform(0, self.jitter)
        return float(max(round(backoff, 3), retry_after))


def call_with_retry(
    attempt: Callable[[], T], policy: RetrySettings, wait: Wait = sleep_wait, what: str = ""
) -> T:
    """Call ``attempt`` until it returns, retrying on :class:`RetriableError` up to
    ``policy.attempts`` tries; the last error is raised. ``wait`` raising
    :class:`SourceStoppedError` when the source stops keeps shutdowns prompt."""
    for number in range(1, policy.attempts + 1):
        try:
            return attempt()
        except RetriableError as exc:
            if number == policy.attempts:
                raise
            requested = exc.retry_after if isinstance(exc, RetryLaterError) else 0.0
            delay = policy.delay(number, requested)
            logger.warning(
                "%s failed (%s); try %d in %.2fs", what or "call", exc, number + 1, delay
            )
            if wait(delay):
                raise SourceStoppedError(f"stopped while retrying {what}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def parse_retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); 0 if absent."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def without_query(url: str | httpx.URL) -> str:
    """A URL for logs: its query may carry a key, so it is left out."""
    return str(httpx.URL(url).copy_with(query=None))


def check_response(response: httpx.Response) -> httpx.Response:
    """Classify an HTTP response by status: return it when it succeeded, else raise."""
    status = response.status_code
    if status < 400:
        return response
    where = f"{response.request.method} {without_query(response.request.url)}"
    summary = f"{where} answered {status}: {response.text[:200]!r}"
    if status == 429 or status >= 500:
        raise RetryLaterError(
            summary, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    if status == 400:
        raise BadDataError(summary)
    raise FatalError(summary)


def http_request(
    client: httpx.Client,
    method: str,
    url: str,
    policy: RetrySettings,
    wait: Wait = sleep_wait,
    **options: Any,
) -> httpx.Response:
    """One HTTP request with the retries above; ``options`` go to ``client.request``."""

    what = f"{method} {without_query(url)}"

    def attempt() -> httpx.Response:
        try:
            response = client.request(method, url, **options)
        except httpx.TransportError as exc:  # connect/read errors and timeouts
            raise RetryLaterError(f"{what}: {type(exc).__name__}: {exc}", 0.0) from exc
        return check_response(response)

    return call_with_retry(attempt, policy, wait, what=what)
