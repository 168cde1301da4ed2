"""Fault injection for the reliability tests (docs/reliability.md), inert in production.

``CITYGRID_CRASH_AT=<point>[:<n>]`` makes the worker SIGKILL itself the n-th time (default 1st) it
reaches the named point, e.g. ``lifecycle.outputs_sent`` -- between a batch's outputs and its state,
the moment a crash used to lose a dispatch. With the setting empty (always, outside the tests) a
``crash_point`` call costs one comparison.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

# The named moments between two writes, in the order a record meets them.
POINTS = (
    "ingest.outputs_sent",      # an ingest batch's outputs acked, its input not yet committed
    "lean.outputs_sent",        # the lean consumer's outputs acked, not yet committed
    "lifecycle.outputs_sent",   # a lifecycle batch's outputs acked, its state not yet written
    "lifecycle.state_written",  # its state acknowledged by the broker, the input not yet committed
    "sink.inserted",            # the sink's INSERT done, its offsets not yet committed
)

_lock = threading.Lock()
_target: tuple[str, int] | None = None
_seen = 0


def configure(spec: str) -> None:
    """``point[:n]`` (from the crash_at setting); empty disables."""
    global _target, _seen
    spec = spec.strip()
    if not spec:
        _target = None
        return
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"crash_at: unknown point {point!r}; known: {', '.join(POINTS)}")
    _target, _seen = (point, int(count or 1)), 0


def crash_point(point: str) -> None:
    """Die here (SIGKILL, no clean-up, like a power cut) if the tests asked for it."""
    global _seen
    if _target is None or _target[0] != point:
        return
    with _lock:
        _seen += 1
        if _seen < _target[1]:
            return
    log.warning("fault injection: SIGKILL at %s (#%d)", point, _seen)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
