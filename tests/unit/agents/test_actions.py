"""The actions router through the testing bus: case.actions in, case.inputs (keyed by the case's
street code) or case.actions.rejected or a dead letter out."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.actions import ActionRouter, source_index_lookup
from streams.bus.codec import registry
from streams.bus.topics import ACTIONS_REJECTED, CASE_ACTIONS, CASE_INPUTS, dlq
from streams.metrics import PipelineMetrics
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, NOW_MS, PREFIX, clock, fresh_metrics, sample

CASE_ID = "XH07-20261120-2f174e6f"


def action(action_id: str = "ACT-1", case_id: str | None = CASE_ID, source_id: str | None = None,
           **kw: Any) -> dict[str, Any]:
    return {"action_id": action_id, "ts": "2026-11-20T10:00:00+08:00", "case_id": case_id, "source_id": source_id,
            "actor_kind": "department", "actor_id": "房管办", "action": "handled", "note": "已处置", **kw}


def router(metrics: PipelineMetrics, index: dict[str, str] | None = None, ready: bool = True,
           patience: float = 30.0) -> ActionRouter:
    lookup = source_index_lookup(index if index is not None else {}, lambda: ready, patience=patience, poll=0.01)
    return ActionRouter(registry(), metrics, NAMES, lookup, clock=clock)


async def route(handler: ActionRouter, items: list[Any], **kw: Any) -> TestingSink:
    return await run(handler.handle, TestingSource(items, prefix=PREFIX, **kw))


async def test_an_action_with_a_case_id_goes_to_the_partition_of_its_street(metrics: PipelineMetrics) -> None:
    sink = await route(router(metrics), [(CASE_ACTIONS, CASE_ID, action())])
    assert sink.counts() == {CASE_INPUTS: 1}
    [produced] = sink.produced(CASE_INPUTS)
    assert produced.key == "XH07" and produced.value["kind"] == "action"
    # the decoded record, as the engine reads it: every schema field, the missing ones null
    assert json.loads(produced.value["action"]) == {**action(), "photos": None, "extend_minutes": None,
                                                    "departments": None, "triage_id": None, "category": None,
                                                    "address": None, "lat": None, "lon": None}
    assert sample(metrics, "citygrid_events_in_total", source="action", topic=CASE_ACTIONS) == 1


async def test_an_unlocated_case_routes_by_the_unlocated_key(metrics: PipelineMetrics) -> None:
    sink = await route(router(metrics), [(CASE_ACTIONS, None, action(case_id="unlocated-20261120-0a1b2c3d"))])
    assert sink.keys(CASE_INPUTS) == ["unlocated"]


async def test_a_source_id_is_looked_up_in_the_source_index(metrics: PipelineMetrics) -> None:
    sink = await route(router(metrics, {"field:R-7": CASE_ID}),
                       [(CASE_ACTIONS, None, action(case_id=None, source_id="field:R-7"))], encoding="json")
    [value] = sink.values(CASE_INPUTS)
    assert json.loads(value["action"])["case_id"] == CASE_ID and sink.keys(CASE_INPUTS) == ["XH07"]


async def test_an_unknown_source_is_rejected_with_the_action_kept(metrics: PipelineMetrics) -> None:
    sink = await route(router(metrics), [(CASE_ACTIONS, None, action("ACT-9", case_id=None, source_id="field:nope"))])
    assert sink.counts() == {ACTIONS_REJECTED: 1}
    [rejected] = sink.values(ACTIONS_REJECTED)
    assert rejected["action_id"] == "ACT-9" and rejected["case_id"] is None and rejected["ts_ms"] == NOW_MS
    assert rejected["reason"] == "unknown source_id 'field:nope': no case holds that record yet"
    assert json.loads(rejected["action"])["source_id"] == "field:nope"


async def test_while_the_index_loads_an_unknown_source_waits_for_it(metrics: PipelineMetrics) -> None:
    index: dict[str, str] = {}
    loaded = False
    lookup = source_index_lookup(index, lambda: loaded, patience=5.0, poll=0.01)

    async def load_later() -> None:
        nonlocal loaded
        await asyncio.sleep(0.1)
        index["field:R-7"] = CASE_ID
        loaded = True

    loader = asyncio.create_task(load_later())
    assert await lookup("field:R-7") == CASE_ID
    await loader


async def test_the_wait_for_a_loading_index_is_bounded(metrics: PipelineMetrics) -> None:
    lookup = source_index_lookup({}, lambda: False, patience=0.1, poll=0.01)
    started = time.monotonic()
    assert await lookup("field:R-7") is None
    assert time.monotonic() - started < 2


async def test_invalid_actions_are_dead_lettered(metrics: PipelineMetrics) -> None:
    items = [(CASE_ACTIONS, None, action(case_id=None, source_id=None)), (CASE_ACTIONS, "k", b"\xff"),
             (CASE_ACTIONS, None, action(actor_kind="martian"))]
    sink = await route(router(metrics), items, encoding="json")
    dead = sink.values(dlq(CASE_ACTIONS))
    assert [d["offset"] for d in dead] == [0, 1, 2] and set(sink.counts()) == {dlq(CASE_ACTIONS)}
    assert dead[0]["reason"] == "a case action needs 'case_id' or 'source_id'"
    assert dead[1]["key"] == b"k" and dead[1]["original"] == b"\xff"
    assert "actor_kind" in dead[2]["reason"]
    assert sample(metrics, "citygrid_dead_letters_total", topic=CASE_ACTIONS,
                  reason="a case action needs _ or _") == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
async def test_arbitrary_bytes_never_raise_and_each_is_dead_lettered_once(values: list[bytes]) -> None:
    sink = await route(router(fresh_metrics()), [(CASE_ACTIONS, None, v) for v in values])
    assert [d["original"] for d in sink.values(dlq(CASE_ACTIONS))] == values
    assert set(sink.counts()) == {dlq(CASE_ACTIONS)}
