"""/health/'s liveness (streams.agents.health): agents running, services not crashed, the lifecycle taking
its clock ticks, lean consumers and the sink making progress (polling, or retrying while ClickHouse is down)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.agents.health import Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Service:
    crashed: bool = False
    should_stop: bool = False
    crash_reason: Any = None
    last_progress: float | None = None


@dataclass
class Actor:
    actor_task: Any


@dataclass
class Agent:
    crashed: bool = False
    _actors: list[Actor] = field(default_factory=list)


def test_a_fresh_worker_is_alive_until_something_had_time_to_stall() -> None:
    clock = Clock()
    live = Liveness(120, clock)
    live.watch("ClickHouseSink", Service())
    assert live.report({})["ok"]
    clock.now += 121
    report = live.report({})
    assert not report["ok"]
    assert "lifecycle took no batch for 121.0s (consumer stalled)" in report["problems"]
    assert "ClickHouseSink made no progress for 121.0s" in report["problems"]


def test_progress_keeps_it_alive_and_a_stall_is_named() -> None:
    clock = Clock()
    live = Liveness(120, clock)
    sink = Service()
    live.watch("ClickHouseSink", sink)
    for _ in range(5):
        clock.now += 60
        live.beat("lifecycle")
        sink.last_progress = clock.now   # a poll, or an insert retried while ClickHouse is down
        assert live.report({})["ok"]
    clock.now += 130
    live.beat("lifecycle")
    assert live.report({})["problems"] == ["ClickHouseSink made no progress for 130.0s"]


def test_a_crashed_service_or_a_dead_agent_fails_at_once() -> None:
    live = Liveness(120, Clock())
    live.watch("LeanIngest", Service(crashed=True, crash_reason=RuntimeError("boom")))
    assert live.report({})["problems"] == ["LeanIngest crashed: RuntimeError('boom')"]

    async def finished() -> None:
        return None

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(finished())
        loop.run_until_complete(task)
    finally:
        loop.close()
    live = Liveness(120, Clock())
    report = live.report({"ingest": Agent(_actors=[Actor(task)]), "lifecycle": Agent(crashed=True)})
    assert report["problems"] == ["agent ingest is not running", "agent lifecycle is not running"]
