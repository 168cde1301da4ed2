"""Delivery policy pieces (streams.sinks.webhooks.policy): status classes, Retry-After, backoff, circuit breaker,
token bucket."""
from __future__ import annotations

import asyncio
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sinks.webhooks.policy import (
    CircuitBreaker,
    TokenBucket,
    backoff_seconds,
    classify_status,
    parse_retry_after,
)


@given(st.integers(100, 599))
def test_classify_status(status: int) -> None:
    outcome = classify_status(status)
    if 200 <= status < 300:
        assert outcome == "delivered"
    elif status == 429 or status >= 500:
        assert outcome == "retry"
    else:
        assert outcome == "failed"


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_120, usegmt=True)
    assert parse_retry_after(date, now_s=1_000_000) == pytest.approx(120)
    assert parse_retry_after(email.utils.formatdate(999_000, usegmt=True), now_s=1_000_000) == 0.0


@given(st.integers(1, 40), st.floats(0.01, 10), st.floats(0.01, 600))
def test_backoff_doubles_with_equal_jitter_up_to_the_cap(attempt: int, initial_s: float, max_s: float) -> None:
    cap = min(max_s, initial_s * 2 ** (attempt - 1))
    assert cap / 2 <= backoff_seconds(attempt, initial_s, max_s) <= cap


async def test_breaker_opens_after_failures_and_probes_once() -> None:
    changes: list[bool] = []
    breaker = CircuitBreaker(failures=3, reset_s=0.05, on_change=changes.append)
    for _ in range(3):
        await breaker.acquire()
        breaker.failure()
    assert breaker.state == "open" and changes == [True]
    # after reset_s one caller probes; the second waits for the verdict
    await breaker.acquire()
    assert breaker.state == "half_open" and breaker.probing
    second = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()
    breaker.success()
    await asyncio.wait_for(second, 1)
    assert breaker.state == "closed" and changes == [True, False]


async def test_failed_probe_reopens_and_cancelled_probe_releases() -> None:
    breaker = CircuitBreaker(failures=1, reset_s=0.01)
    await breaker.acquire()
    breaker.failure()
    await breaker.acquire()  # probe
    breaker.failure()
    assert breaker.state == "open"
    await breaker.acquire()  # the next probe ...
    breaker.release()        # ... abandoned without a verdict
    await asyncio.wait_for(breaker.acquire(), 1)  # someone else may probe
    assert breaker.probing


async def test_token_bucket_spends_burst_then_refills() -> None:
    bucket = TokenBucket(rate=1000.0, burst=3)
    for _ in range(3):
        await bucket.acquire()
    assert bucket.tokens < 1
    await asyncio.wait_for(bucket.acquire(), 1)  # refilled at 1000/s
