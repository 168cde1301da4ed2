"""Where the case engine keeps its pending timers: SLA lights (yellow, red) and the purge of a finished case.

A timer is ``(due_ms, case_id, seq, kind)`` within a partition. The engine checks every fired timer against
its case document (the timer's ``seq`` and flags), so a stale or repeated entry changes nothing: a queue may
hold duplicates and entries of cases that moved on. Two implementations:

- :class:`HeapTimers` (here): a heap per partition in memory, rebuilt from the documents after a restart
  (``streams replay``, tests, the dev worker);
- the worker's RocksDB-backed queue (streams.agents.casestate): timers as sorted keys on disk, so a million
  open cases cost no memory and no rebuild.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol

Timer = tuple[int, str, int, str]  # (due_ms, case_id, timer seq, "yellow" | "red" | "purge")


class TimerQueue(Protocol):
    def push(self, partition: int, timer: Timer) -> None: ...

    def pop_due(self, partition: int, now_ms: int) -> Iterator[Timer]:
        """Remove and yield the timers of the partition due at ``now_ms``, earliest first."""
        ...

    def next_due(self, partition: int | None = None) -> int | None: ...

    def pending(self) -> int: ...

    def partitions(self) -> list[int]: ...

    def clear(self) -> None: ...


class HeapTimers:
    """A heap per partition; an entry pushed twice is kept once."""

    def __init__(self) -> None:
        self.deadlines: dict[int, list[Timer]] = defaultdict(list)
        self._queued: set[Timer] = set()

    def push(self, partition: int, timer: Timer) -> None:
        if timer in self._queued:
            return
        self._queued.add(timer)
        heapq.heappush(self.deadlines[partition], timer)

    def pop_due(self, partition: int, now_ms: int) -> Iterator[Timer]:
        heap = self.deadlines.get(partition)
        while heap and heap[0][0] <= now_ms:
            timer = heapq.heappop(heap)
            self._queued.discard(timer)
            yield timer

    def next_due(self, partition: int | None = None) -> int | None:
        heaps = [self.deadlines.get(partition, [])] if partition is not None else list(self.deadlines.values())
        heads = [h[0][0] for h in heaps if h]
        return min(heads) if heads else None

    def pending(self) -> int:
        return sum(len(h) for h in self.deadlines.values())

    def partitions(self) -> list[int]:
        return list(self.deadlines)

    def clear(self) -> None:
        self.deadlines.clear()
        self._queued.clear()
