"""Per-key budgets on the limits library: requests and records, with a Retry-After."""

from __future__ import annotations

import pytest

from streams.gateway.limits import RateLimits, parse_limit


async def test_request_budget_per_caller() -> None:
    limits = RateLimits("3/minute", "100/minute")
    verdicts = [await limits.request("key:a") for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert 1 <= verdicts[-1].retry_after <= 60
    assert (await limits.request("key:b")).allowed  # another caller, another budget
    assert (await limits.request("key:a", "10/minute")).allowed  # a key's own budget is its own window


async def test_record_budget_counts_records_not_requests() -> None:
    limits = RateLimits("100/second", "10/minute")
    assert (await limits.records("k", 6)).allowed
    over = await limits.records("k", 5)
    assert not over.allowed and over.retry_after >= 1
    assert (await limits.records("k", 4)).allowed
    too_big = await limits.records("other", 11)
    assert not too_big.allowed  # more than a whole window: never admissible
    assert (await limits.records("other", 0)).allowed


def test_a_bad_limit_is_named() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        parse_limit("lots")
