"""Ways out of manual triage 人工分拨: the centre sets the category and/or place a triage record lacked and the
record becomes the signal it would have been — in the worker's actions router and in replay alike."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from streams.agents.actions import ActionRouter
from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import ACTIONS_REJECTED, CASE_ACTIONS, CASE_INPUTS, HOTLINE_CALLS
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.metrics import PipelineMetrics
from streams.replay import replay
from streams.settings import Settings
from streams.testing import TestingSource, run
from tests.unit.agents.support import NAMES, PREFIX, call, clock

UNPLACED = call("C-TR-1", text="我家楼下的饭店油烟直排，熏得窗户都不敢开", address="南京东路1号")   # not in 徐汇区


def triaged(kb: Knowledge, ingestor: Ingestor | None = None) -> dict[str, Any]:
    ingestor = ingestor or Ingestor(kb)
    [item] = ingestor.ingest("hotline_call", registry().from_json("hotline_call", UNPLACED), 0).triage
    assert "unknown location" in item.reason
    return dict(item.__dict__)


def action(triage_id: str, actor_kind: str = "center", **fields: Any) -> dict[str, Any]:
    return {"action_id": f"TR-{len(fields)}-{actor_kind}", "ts": "2026-11-20T10:00:00+08:00", "case_id": None,
            "source_id": None, "actor_kind": actor_kind, "actor_id": "区网格中心", "action": "from_triage",
            "triage_id": triage_id, **fields}


def test_the_record_becomes_the_signal_it_would_have_been(kb: Knowledge) -> None:
    ingestor = Ingestor(kb)   # one ingestor: callers' pseudonyms are keyed by its settings
    item = triaged(kb, ingestor)
    with pytest.raises(RejectRecord, match="set a location"):
        ingestor.from_triage(item, 0)
    signal = ingestor.from_triage(item, 0, address="斜土路1200号", actor="区网格中心")
    direct = ingestor.ingest("hotline_call", registry().from_json(
        "hotline_call", {**UNPLACED, "address": "斜土路1200号"}), 0).signals[0]
    assert (signal.signal_id, signal.source_id, signal.street) == (direct.signal_id, direct.source_id, direct.street)
    assert signal.category_name == "餐饮油烟" and signal.reporter_id == direct.reporter_id   # the pseudonym
    assert signal.extra_dict()["triage_id"] == item["triage_id"]
    other = ingestor.from_triage(item, 0, category="噪声扰民", address="斜土路1200号")
    assert other.category_name == "噪声扰民"
    with pytest.raises(RejectRecord, match="set a category"):
        ingestor.from_triage(item, 0, category="外星人", address="斜土路1200号")


async def test_the_actions_router_makes_the_case_input(kb: Knowledge, metrics: PipelineMetrics) -> None:
    item = triaged(kb)

    async def triage_of(triage_id: str) -> Any:
        return item if triage_id == item["triage_id"] else None

    async def no_case(source_id: str) -> None:
        return None

    router = ActionRouter(registry(), metrics, NAMES, no_case, clock=clock, triage_of=triage_of,
                          ingestor=Ingestor(kb))
    items = [(CASE_ACTIONS, None, action(item["triage_id"], address="斜土路1200号")),
             (CASE_ACTIONS, None, action(item["triage_id"], "department", address="斜土路1200号")),
             (CASE_ACTIONS, None, action("tri-nope", address="斜土路1200号")),
             (CASE_ACTIONS, None, action(item["triage_id"]))]          # still no place
    sink = await run(router.handle, TestingSource(items, prefix=PREFIX))
    [signal_input] = sink.produced(CASE_INPUTS)
    assert signal_input.key == "XH03" and json.loads(signal_input.value["signal"])["street"] == "斜土街道"
    reasons = [r["reason"] for r in sink.values(ACTIONS_REJECTED)]
    assert len(reasons) == 3 and "only the centre" in reasons[0] and "unknown triage record" in reasons[1]
    assert "set a location" in reasons[2]


def test_replay_makes_one_case_however_often_the_action_comes(kb: Knowledge) -> None:
    item = triaged(kb)
    lines = [{"topic": HOTLINE_CALLS, "value": UNPLACED}]
    lines += [{"topic": CASE_ACTIONS, "value": {**action(item["triage_id"], address="斜土路1200号"),
                                               "action_id": f"TR-{i}", "ts": f"2026-11-20T10:0{i}:00+08:00"}}
              for i in range(2)]
    err = io.StringIO()
    report = replay([json.dumps(line, ensure_ascii=False) for line in lines], Settings(), None, knowledge=kb,
                    err=err)
    assert report.triage == 1 and len(report.cases) == 1, err.getvalue()
    [case] = report.cases.values()
    assert case["category_name"] == "餐饮油烟" and case["street"] == "斜土街道"
    assert records.signal_input  # the same mapping the router uses
