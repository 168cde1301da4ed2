"""Delivery policy: when to send, when to wait, when to give up.

Each endpoint has its own concurrency limit, token bucket, Retry-After pause and circuit breaker
(``EndpointState``), so a slow or dead endpoint only holds its own lanes. ``classify_status`` and
``backoff_seconds`` decide between delivered, retry and failed, and how long a retry waits.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from streams.sinks.webhooks.config import Endpoint

Outcome = Literal["delivered", "retry", "failed"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; ``acquire`` waits for one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()  # first come, first served

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class CircuitBreaker:
    """closed -> (``failures`` in a row) -> open for ``reset_s`` -> half-open: one probe; its success
    closes the circuit, its failure opens it again. Waiting callers do not spend delivery attempts."""

    def __init__(self, failures: int, reset_s: float, on_change: Callable[[bool], None] | None = None) -> None:
        self.threshold, self.reset_s = failures, reset_s
        self.state: Literal["closed", "open", "half_open"] = "closed"
        self.consecutive = 0
        self.open_until = 0.0
        self.probing = False
        self._changed = asyncio.Event()
        self._on_change = on_change

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(self) -> None:
        while True:
            if self.state == "closed":
                return
            if self.state == "open":
                wait = self.open_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self.state = "half_open"
            if not self.probing:
                self.probing = True
                return
            await self._changed.wait()

    def success(self) -> None:
        was_open = self.state != "closed"
        self.state, self.consecutive, self.probing = "closed", 0, False
        if was_open:
            if self._on_change:
                self._on_change(False)
            self._notify()

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.threshold:
            if self.state == "closed" and self._on_change:
                self._on_change(True)
            self.state = "open"
            self.open_until = time.monotonic() + self.reset_s
            self.probing = False
            self._notify()

    def release(self) -> None:
        """A probe abandoned without an outcome (cancelled): let another caller probe."""
        if self.probing:
            self.probing = False
            self._notify()


@dataclass
class EndpointState:
    endpoint: Endpoint
    in_flight: asyncio.Semaphore
    bucket: TokenBucket
    breaker: CircuitBreaker
    paused_until: float = 0.0  # monotonic; set by a 429/503 Retry-After: the whole endpoint waits

    async def wait_ready(self) -> None:
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await self.breaker.acquire()
        await self.bucket.acquire()


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def classify_status(status: int) -> Outcome:
    """2xx delivered; 429 and 5xx retried; anything else (other 4xx, 3xx, 1xx) fails without retry."""
    if 200 <= status < 300:
        return "delivered"
    if status == 429 or status >= 500:
        return "retry"
    return "failed"


def backoff_seconds(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random (spreads a thundering herd)."""
    cap = min(max_s, initial_s * 2 ** (attempt - 1))
    return cap / 2 + random.uniform(0, cap / 2)
