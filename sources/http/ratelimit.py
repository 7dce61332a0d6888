"""Per-client rate limits of the HTTP source: a token bucket per API key (or client IP).

Each request (or WebSocket message) takes one token; a bucket holds at most ``burst``
tokens and refills at ``rate`` tokens per second. An empty bucket answers how long until
the next token: the ``Retry-After`` of the 429.

>>> clock = iter([0.0, 0.0, 0.0, 1.0]).__next__
>>> limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
>>> [limiter.wait_time("key-a") for _ in range(4)]
[0.0, 0.0, 1.0, 0.0]
>>> RateLimiter(rate=0.0, burst=1).wait_time("anyone")  # rate 0: no limit
0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sources.http.errors import ApiError

MAX_CLIENTS = 10_000
"""Buckets kept; beyond it the full (idle) buckets are dropped: a full bucket is the
same as no bucket."""


@dataclass
class TokenBucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by client identity; ``rate`` 0 turns limiting off."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, TokenBucket] = {}

    def wait_time(self, client: str) -> float:
        """Take a token for ``client``: 0 if there was one, else the seconds until one."""
        if self.rate <= 0:
            return 0.0
        at = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            self._forget_idle(at)
            bucket = self._buckets[client] = TokenBucket(float(self.burst), at)
        bucket.tokens = min(float(self.burst), bucket.tokens + (at - bucket.updated) * self.rate)
        bucket.updated = at
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def check(self, client: str) -> None:
        """Take a token for ``client`` or raise the 429 :class:`ApiError`."""
        wait = self.wait_time(client)
        if wait > 0:
            raise rate_limited(wait)

    def _forget_idle(self, at: float) -> None:
        if len(self._buckets) < MAX_CLIENTS:
            return
        full = [
            client
            for client, bucket in self._buckets.items()
            if bucket.tokens + (at - bucket.updated) * self.rate >= self.burst
        ]
        for client in full:
            del self._buckets[client]
        while len(self._buckets) >= MAX_CLIENTS:  # all busy: drop the longest-known
            del self._buckets[next(iter(self._buckets))]


def rate_limited(wait_s: float) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many requests for this client; retry in {wait_s:.1f} s",
        None,
        retry_after=wait_s,
    )


def client_identity(key_id: str | None, host: str | None) -> str:
    """Whom a request counts against: its API key, else its client address."""
    return f"key:{key_id}" if key_id is not None else f"ip:{host or 'unknown'}"
