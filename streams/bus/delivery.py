"""Waiting out an outage without losing a batch: used where the caller cannot pause its consumer
itself (the Faust agents, whose consumer Faust runs and keeps polling in the background)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from streams.bus.emit import Emitter, SendFailed

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 15.0


async def deliver_until_acked(out: Emitter, label: str, stopping: Callable[[], bool] = lambda: False,
                              renew: Callable[[], Awaitable[None]] | None = None) -> int:
    """``out.flush()`` until every staged record is acknowledged, backing off while the broker is away.
    Unbounded on purpose: the records are the city's, and the batch is not acknowledged until they
    are out; a worker told to stop (``stopping()``) gives up and leaves the batch uncommitted. A
    producer that can no longer send (its idempotence state lost in the outage) is replaced by
    ``renew()`` before the next try."""
    delay = BACKOFF_INITIAL
    since: float | None = None
    while True:
        try:
            sent = await out.flush()
        except SendFailed as exc:
            if stopping():
                raise
            if exc.broken and renew is not None:
                log.warning("%s: the producer lost its idempotence state (%s); replacing it", label, exc.error)
                await renew()
            if since is None:
                since = time.monotonic()
                log.warning("%s: outputs not acknowledged (%s); retrying until the broker is back", label, exc)
            else:
                log.info("%s: still not acknowledged after %.0fs (%s)", label, time.monotonic() - since, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        if since is not None:
            log.warning("%s: outputs acknowledged after %.0fs", label, time.monotonic() - since)
        return sent
