"""What ``/health/`` answers (the Kubernetes probes): is this worker alive and processing?

* every Faust agent has its actor running (a crashed agent that was not restarted fails);
* every service beside the agents (lean ingest, ClickHouse sink, webhooks, gauges) is running, not crashed;
* the lifecycle agent took a batch recently: clock ticks go through case.inputs every
  ``timer_tick_seconds``, so a Faust consumer that stopped fetching shows here;
* every lean batch consumer (lean ingest, ClickHouse sink) made progress recently: a poll, or an
  insert attempt while ClickHouse is down (retrying is alive; a loop hung for ``stall_seconds`` is not).

Before anything has had ``stall_seconds`` to show progress the worker counts as alive (the startup
probe covers a long changelog recovery).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# How long without progress counts as stalled (seconds of monotonic time).
DEFAULT_STALL_SECONDS = 120.0


class Liveness:
    def __init__(self, stall_seconds: float = DEFAULT_STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.started = clock()
        self.services: dict[str, Any] = {}       # name -> mode.Service (with ``last_progress`` when it loops)
        self.beats: dict[str, float] = {}        # name -> last progress (monotonic)

    def watch(self, name: str, service: Any) -> None:
        self.services[name] = service

    def beat(self, name: str) -> None:
        self.beats[name] = self.clock()

    def _stale(self, last: float | None) -> float | None:
        """Seconds since ``last`` (since start when never), when that exceeds the stall limit."""
        age = self.clock() - (last if last is not None else self.started)
        return round(age, 1) if age > self.stall_seconds else None

    def report(self, agents: dict[str, Any] | None = None) -> dict[str, Any]:
        problems: list[str] = []
        for name, agent in (agents or {}).items():
            actors = list(getattr(agent, "_actors", []))
            if getattr(agent, "crashed", False) or any(a.actor_task is not None and a.actor_task.done()
                                                       for a in actors):
                problems.append(f"agent {name} is not running")
        for name, service in self.services.items():
            if getattr(service, "crashed", False):
                problems.append(f"{name} crashed: {getattr(service, 'crash_reason', None)!r}")
            elif getattr(service, "should_stop", False):
                problems.append(f"{name} is stopping")
            if hasattr(service, "last_progress"):   # a service that loops (lean ingest, the ClickHouse sink)
                stale = self._stale(service.last_progress)
                if stale is not None:
                    problems.append(f"{name} made no progress for {stale}s")
        for name, last in {"lifecycle": None, **self.beats}.items():
            stale = self._stale(self.beats.get(name, last))
            if stale is not None:
                problems.append(f"{name} took no batch for {stale}s (consumer stalled)")
        return {"ok": not problems, "problems": problems,
                "uptime_s": round(self.clock() - self.started, 1)}
