"""The lifecycle adapter through the testing bus: case inputs (signals, actions, ticks) in; case events,
dispatches, SLA alerts, rejections, webhook deliveries and one current state per case and batch out."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.lifecycle import LifecycleAdapter, WebhookFanout, open_case_counts
from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import (
    ACTIONS_REJECTED,
    CASE_EVENTS,
    CASE_INPUTS,
    CASES,
    DISPATCHES,
    SLA_ALERTS,
    WEBHOOK_DELIVERIES,
    dlq,
)
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal
from streams.metrics import PipelineMetrics
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, PREFIX, call, clock, fresh_metrics, sample

INGEST_MS = 1_795_138_300_000


@pytest.fixture()
def signals(kb: Knowledge) -> list[Signal]:
    """Two callers about the same group rent 群租 at the same address, then another call elsewhere."""
    ingestor = Ingestor(kb)
    out = []
    lock = call("C3", text="江南新村小区里有人私装地锁，老人被绊倒了", address="江南新村")
    for record in (call("C1"), call("C2"), lock):
        valid = registry().from_json("hotline_call", record)
        out += ingestor.ingest("hotline_call", valid, INGEST_MS).signals
    return out


class World:
    """A lifecycle adapter over plain dicts, as replay holds the engine's state."""

    def __init__(self, kb: Knowledge, metrics: PipelineMetrics, cases: dict[str, dict[str, Any]] | None = None,
                 sources: dict[str, str] | None = None, deliveries: Any = None) -> None:
        self.cases = cases if cases is not None else {}
        self.sources = sources if sources is not None else {}
        self.engine = CaseEngine(kb, self.cases, self.sources, auto_dispatch=True)
        extra = {"deliveries": deliveries} if deliveries is not None else {}
        self.adapter = LifecycleAdapter(self.engine, registry(), metrics, NAMES, clock=clock, **extra)

    async def feed(self, recs: list[records.TopicRecord], **kw: Any) -> TestingSink:
        items = [(r.topic, r.key, r.value) for r in recs]
        return await run(self.adapter.handle, TestingSource(items, prefix=PREFIX), **kw)


def act(case_id: str, name: str, actor_kind: str = "department", actor_id: str = "房管办") -> records.TopicRecord:
    return records.action_input({"action_id": f"A-{name}", "ts": "2026-11-20T10:00:00+08:00", "case_id": None,
                                 "source_id": None, "actor_kind": actor_kind, "actor_id": actor_id, "action": name,
                                 "note": None, "photos": None, "extend_minutes": None, "departments": None}, case_id)


async def test_a_signal_opens_and_dispatches_a_case(kb: Knowledge, metrics: PipelineMetrics,
                                                    signals: list[Signal]) -> None:
    world = World(kb, metrics)
    sink = await world.feed([records.signal_input(signals[0])])
    [case_id] = world.cases
    assert case_id.startswith("XH07-20261120-")
    assert [v["stage"] for v in sink.values(CASE_EVENTS)] == ["register", "dispatch", "handle"]
    [dispatch] = sink.produced(DISPATCHES)
    assert dispatch.key == case_id and dispatch.value["departments"] == ["房管办"] and dispatch.value["level"] == 3
    assert set(dispatch.value) == set(records.DISPATCH_FIELDS)
    [case] = sink.produced(CASES)
    state = json.loads(case.value["state"])
    assert case.key == case_id and state["status"] == "handle" and case.value["version"] == state["version"]
    assert set(sink.keys(CASE_EVENTS)) == {case_id}
    assert sample(metrics, "citygrid_cases_opened_total", origin="12345") == 1
    assert sample(metrics, "citygrid_dispatches_total", level="3") == 1
    assert sample(metrics, "citygrid_ingest_to_dispatch_seconds_count") == 1


async def test_a_case_changed_several_times_in_a_batch_sends_its_state_once(kb: Knowledge, metrics: PipelineMetrics,
                                                                           signals: list[Signal]) -> None:
    world = World(kb, metrics)
    sink = await world.feed([records.signal_input(s) for s in signals])
    assert len(world.cases) == 2  # the second caller's report merged into the first case
    states = [json.loads(v["state"]) for v in sink.values(CASES)]
    assert sorted(s["case_id"] for s in states) == sorted(world.cases)
    for state in states:  # the latest version of each, though the merged case changed twice
        assert state["version"] == world.cases[state["case_id"]]["version"]
    assert sorted(s["version"] for s in states) == [1, 2]
    assert sample(metrics, "citygrid_dedup_merges_total") == 1
    assert sink.counts()[CASES] == 2


async def test_actions_move_the_case_or_are_rejected(kb: Knowledge, metrics: PipelineMetrics,
                                                     signals: list[Signal]) -> None:
    world = World(kb, metrics)
    await world.feed([records.signal_input(signals[0])])
    [case_id] = world.cases
    # the centre may verify this case, but not before it is reported handled
    sink = await world.feed([act(case_id, "verify_pass", "center", "街道网格中心"), act(case_id, "handled")])
    [rejected] = sink.produced(ACTIONS_REJECTED)
    assert rejected.key == case_id and "'verify_pass' is not allowed in stage handle" in rejected.value["reason"]
    [event] = sink.values(CASE_EVENTS)
    assert (event["action"], event["stage"], event["actor_id"]) == ("handled", "verify", "房管办")
    assert json.loads(sink.values(CASES)[0]["state"])["status"] == "verify"


async def test_a_tick_fires_the_sla_timers(kb: Knowledge, metrics: PipelineMetrics, signals: list[Signal]) -> None:
    world = World(kb, metrics)
    await world.feed([records.signal_input(signals[0])])
    sink = await world.feed([records.tick_input(1_796_500_000_000)])  # days later: past the handle deadline
    lights = [(a["kind"], a["light"]) for a in sink.values(SLA_ALERTS)]
    assert ("sla_yellow", "yellow") in lights and ("sla_red", "red") in lights
    assert sample(metrics, "citygrid_sla_transitions_total", light="red", stage="handle") == 1


async def test_bad_inputs_are_dead_lettered_and_the_batch_goes_on(kb: Knowledge, metrics: PipelineMetrics,
                                                                  signals: list[Signal]) -> None:
    world = World(kb, metrics)
    bogus = records.TopicRecord(CASE_INPUTS, {"kind": "bogus", "signal": None, "action": None, "tick_ms": None})
    broken = records.TopicRecord(CASE_INPUTS, {"kind": "signal", "signal": "{not json", "action": None,
                                               "tick_ms": None})
    items = [(CASE_INPUTS, None, b"\x00garbage"), (bogus.topic, None, bogus.value), (broken.topic, "k", broken.value)]
    sink = await run(world.adapter.handle, TestingSource(
        items + [(r.topic, r.key, r.value) for r in [records.signal_input(signals[0])]], prefix=PREFIX))
    dead = sink.values(dlq(CASE_INPUTS))
    assert [d["offset"] for d in dead] == [0, 1, 2]
    assert dead[1]["reason"] == "unknown case input kind 'bogus'"
    assert dead[2]["key"] == b"k" and "Expecting property name" in dead[2]["reason"]
    assert len(world.cases) == 1 and sink.counts()[CASES] == 1
    assert sample(metrics, "citygrid_dead_letters_total", topic=CASE_INPUTS,
                  reason="unknown case input kind _") == 1


async def test_a_bug_in_the_engine_parks_the_input(kb: Knowledge, metrics: PipelineMetrics,
                                                   signals: list[Signal]) -> None:
    world = World(kb, metrics)

    def broken(now_ms: int, partition: int | None = None) -> Any:
        raise ZeroDivisionError("a bug")

    world.engine.on_tick = broken  # type: ignore[method-assign]
    sink = await world.feed([records.tick_input(1), records.signal_input(signals[0])])
    [dead] = sink.values(dlq(CASE_INPUTS))
    assert dead["reason"] == "internal error: ZeroDivisionError('a bug')"
    assert len(world.cases) == 1


async def test_focus_is_called_before_each_input(kb: Knowledge, metrics: PipelineMetrics,
                                                 signals: list[Signal]) -> None:
    world = World(kb, metrics)
    seen: list[tuple[int, int]] = []

    async def handle(batch: list[Any], out: Any) -> None:
        await world.adapter.handle(batch, out, focus=lambda i: seen.append((i, len(world.cases))))

    items = [(r.topic, r.key, r.value) for r in map(records.signal_input, signals)]
    await run(handle, TestingSource(items, prefix=PREFIX))
    assert seen == [(0, 0), (1, 1), (2, 1)]  # the third input opens the second case after its focus


async def test_a_stale_engine_rebuilds_its_indexes_from_the_mappings(kb: Knowledge, metrics: PipelineMetrics,
                                                                     signals: list[Signal]) -> None:
    """After a rebalance the tables hold cases this engine never indexed: a duplicate must still merge."""
    first = World(kb, metrics)
    await first.feed([records.signal_input(signals[0])])
    second = World(kb, metrics, first.cases, first.sources)  # a new worker over the recovered tables
    sink = await second.feed([records.signal_input(signals[1])])
    assert len(first.cases) == 1 and [e["action"] for e in sink.values(CASE_EVENTS)] == ["merge"]
    assert not second.adapter.stale
    second.adapter.mark_stale()
    assert second.adapter.stale


async def test_notifications_become_webhook_deliveries(kb: Knowledge, metrics: PipelineMetrics,
                                                       signals: list[Signal], tmp_path: Path) -> None:
    path = tmp_path / "webhooks.yaml"
    path.write_text("endpoints:\n  房管办:\n    url: http://127.0.0.1:9/hook\n    secret: 0123456789abcdef\n",
                    encoding="utf-8")
    world = World(kb, metrics, deliveries=WebhookFanout(path))
    sink = await world.feed([records.signal_input(signals[0])])
    [delivery] = sink.produced(WEBHOOK_DELIVERIES)
    [case_id] = world.cases
    assert delivery.key == case_id and delivery.value["department"] == "房管办"
    assert delivery.value["kind"] == "dispatch" and delivery.value["attempt"] == 1


def test_no_webhooks_file_means_no_deliveries() -> None:
    fanout = WebhookFanout(None)
    assert fanout([{"kind": "dispatch", "case_id": "c", "departments": ["房管办"]}]) == [] and fanout.config is None


async def test_open_case_counts_by_stage_and_light(kb: Knowledge, metrics: PipelineMetrics,
                                                   signals: list[Signal]) -> None:
    world = World(kb, metrics)
    await world.feed([records.signal_input(s) for s in signals])
    assert open_case_counts([*world.cases.values(), None]) == {("handle", "green"): 2}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
async def test_arbitrary_bytes_never_raise_and_each_is_dead_lettered_once(kb: Knowledge, values: list[bytes]) -> None:
    world = World(kb, fresh_metrics())
    sink = await run(world.adapter.handle, TestingSource([(CASE_INPUTS, None, v) for v in values], prefix=PREFIX))
    assert [d["original"] for d in sink.values(dlq(CASE_INPUTS))] == values
    assert set(sink.counts()) == {dlq(CASE_INPUTS)} and not world.cases


async def test_closed_cases_leave_the_live_state_after_the_retention_and_erasure_reaches_every_case(
        kb: Knowledge, metrics: PipelineMetrics, signals: list[Signal]) -> None:
    world = World(kb, metrics)
    world.adapter.closed_case_ttl_ms = 3_600_000          # an hour after closing
    await world.feed([records.signal_input(s) for s in signals])
    closed, still_open = sorted(world.cases)[:2]
    await world.feed([act(closed, "void", "center", "街道网格中心")])
    ended = world.cases[closed]["updated_ms"]
    await world.feed([records.tick_input(ended + 60_000)])   # within the hour: kept
    assert closed in world.cases
    world.adapter._purged_at.clear()
    await world.feed([records.tick_input(ended + 2 * 3_600_000)])
    assert closed not in world.cases and still_open in world.cases
    assert closed not in world.sources.values(), "its source records are forgotten with it"

    # erasure: a caller's pseudonym leaves every case of the partition
    who = world.cases[still_open]["origin_reporter"]
    erase = records.TopicRecord(CASE_INPUTS, {"kind": "erase", "signal": None, "tick_ms": None,
                                              "action": json.dumps({"request_id": "e1", "pseudonyms": [who]})})
    sink = await world.feed([erase])
    assert who not in json.dumps(world.cases[still_open]) and sink.counts()[CASES] >= 1
