"""Per-device one-minute aggregates with an event-time watermark.

Every reading lands in the bucket of its device, metric and minute (Asia/Shanghai minutes are UTC minutes:
the offset is whole hours). A minute is written once, when it closes:

* the **watermark** of a partition is the newest event time seen on it minus the allowed lateness;
* minute ``[m, m + 60 s)`` **closes** when the watermark reaches ``m + 60 s``; its buckets become rows
  (``n``, ``min``, ``max``, ``sum``, ``last`` = the value of the newest reading, the later one on a tie);
* a **late** reading — one whose minute has already closed — is not aggregated (the row is written and
  final); the caller counts it and still runs it through the alarm checks.

Closing is decided reading by reading, so the rows are a function of the readings' order alone, never of
how they were batched: a partition replayed from any point yields the same rows, and the store's
ReplacingMergeTree keeps one of each. ``replay_from`` names the oldest input offset an open bucket holds:
the buckets are rebuilt by re-reading from there (they are never written to a changelog).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

MINUTE_MS = 60_000


class MinuteRow(TypedDict):
    """A row of ``device_minutes``."""

    device_id: str
    metric: str
    minute_ms: int
    n: int
    min: float
    max: float
    sum: float
    last: float


@dataclass(slots=True)
class Bucket:
    n: int
    lo: float
    hi: float
    total: float
    last: float
    last_ts: int
    first_offset: int


class AggregatorCheckpoint(TypedDict):
    max_ts: int | None
    closed_before: int


class MinuteAggregator:
    """Open one-minute buckets of one partition and its watermark."""

    def __init__(self, lateness_ms: int) -> None:
        if lateness_ms < 0:
            raise ValueError("lateness must not be negative")
        self.lateness_ms = lateness_ms
        self.open: dict[int, dict[tuple[str, str], Bucket]] = {}   # minute start -> (device, metric) -> bucket
        self.max_ts: int | None = None                              # newest event time seen
        self.closed_before = 0                                      # minutes starting before this are closed

    def add(self, device_id: str, metric: str, ts_ms: int, value: float, offset: int,
            closed: list[MinuteRow] | None = None) -> bool:
        """Aggregate one reading; minutes the watermark closes go to ``closed``. False: the reading is late."""
        minute = ts_ms - ts_ms % MINUTE_MS
        if minute < self.closed_before:
            return False
        buckets = self.open.get(minute)
        if buckets is None:
            buckets = self.open[minute] = {}
        key = (device_id, metric)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = Bucket(1, value, value, value, value, ts_ms, offset)
        else:
            bucket.n += 1
            if value < bucket.lo:
                bucket.lo = value
            if value > bucket.hi:
                bucket.hi = value
            bucket.total += value
            if ts_ms >= bucket.last_ts:
                bucket.last, bucket.last_ts = value, ts_ms
        if self.max_ts is None or ts_ms > self.max_ts:
            self.max_ts = ts_ms
            if closed is not None:
                self._close_due(closed)
        return True

    def observe(self, now_ms: int, closed: list[MinuteRow]) -> None:
        """Move the watermark as if a reading at ``now_ms`` had arrived (an idle partition's clock)."""
        if self.max_ts is None or now_ms > self.max_ts:
            self.max_ts = now_ms
            self._close_due(closed)

    def _close_due(self, closed: list[MinuteRow]) -> None:
        assert self.max_ts is not None
        watermark = self.max_ts - self.lateness_ms
        boundary = watermark - watermark % MINUTE_MS
        if boundary > self.closed_before:
            self.closed_before = boundary
            for minute in sorted(m for m in self.open if m < boundary):
                closed.extend(_rows(minute, self.open.pop(minute)))

    def close_all(self, closed: list[MinuteRow]) -> None:
        """Close every open minute (the end of a replay)."""
        for minute in sorted(self.open):
            closed.extend(_rows(minute, self.open.pop(minute)))
            self.closed_before = max(self.closed_before, minute + MINUTE_MS)

    def replay_from(self) -> int | None:
        """The oldest input offset held by an open bucket (None: nothing open)."""
        return min((b.first_offset for buckets in self.open.values() for b in buckets.values()), default=None)

    def checkpoint(self) -> AggregatorCheckpoint:
        return {"max_ts": self.max_ts, "closed_before": self.closed_before}

    def restore(self, checkpoint: AggregatorCheckpoint) -> None:
        """The watermark of a checkpoint; the open buckets come back by re-adding its readings."""
        self.open.clear()
        self.max_ts = checkpoint.get("max_ts")
        self.closed_before = int(checkpoint.get("closed_before") or 0)

    def open_buckets(self) -> int:
        return sum(len(b) for b in self.open.values())


def _rows(minute: int, buckets: dict[tuple[str, str], Bucket]) -> list[MinuteRow]:
    return [{"device_id": device_id, "metric": metric, "minute_ms": minute, "n": b.n, "min": b.lo, "max": b.hi,
             "sum": b.total, "last": b.last}
            for (device_id, metric), b in sorted(buckets.items())]
