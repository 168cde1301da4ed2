"""Per-key rate limits (429 with Retry-After), on the ``limits`` library's sliding-window counter: O(1) per
hit whatever the cost, so a batch of 5,000 records is one hit of cost 5,000.

Two budgets per caller: requests (every endpoint; callers without a key are counted by client address)
and feed records (POST /v1/feeds). A key may carry its own budgets in the keys file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds, for the Retry-After header


def parse_limit(text: str) -> RateLimitItem:
    """ "100/second", "6000/minute", ... (the limits library's notation); a bad one fails at start."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"rate limit {text!r}: {exc}") from None


class RateLimits:
    def __init__(self, requests: str, records: str) -> None:
        self.default_requests = parse_limit(requests)
        self.default_records = parse_limit(records)
        self._items: dict[str, RateLimitItem] = {}
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    def _item(self, text: str | None, default: RateLimitItem) -> RateLimitItem:
        if text is None:
            return default
        item = self._items.get(text)
        if item is None:
            item = self._items[text] = parse_limit(text)
        return item

    async def _hit(self, item: RateLimitItem, who: str, cost: int) -> Verdict:
        if cost > item.amount:
            # more than a whole window allows: never admissible, say so plainly
            return Verdict(False, int(item.get_expiry()))
        if await self.limiter.hit(item, who, cost=cost):
            return Verdict(True)
        stats = await self.limiter.get_window_stats(item, who)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, min(wait, int(item.get_expiry())))

    async def request(self, who: str, limit: str | None = None) -> Verdict:
        return await self._hit(self._item(limit, self.default_requests), f"req:{who}", 1)

    async def records(self, who: str, count: int, limit: str | None = None) -> Verdict:
        if count <= 0:
            return Verdict(True)
        return await self._hit(self._item(limit, self.default_records), f"rec:{who}", count)


class RateLimited(Exception):
    """Raised by a handler when a caller is over budget; answered 429 with Retry-After."""

    def __init__(self, retry_after: int, what: str) -> None:
        super().__init__(f"rate limit exceeded ({what}); retry after {retry_after}s")
        self.retry_after = retry_after
