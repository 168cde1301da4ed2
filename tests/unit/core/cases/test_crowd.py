"""Crowd response plans 三级响应预案: up with the count at once, down with hysteresis, each change a case event
and a notification to the departments of the level; the centre may step a level down by action."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.cases import crowd
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.times import CITY_TZ

PLAN = crowd.CrowdPlan("", (150, 300, 600), {
    3: crowd.PlanLevel(3, "关注", ("加强巡逻",), ("公安派出所",)),
    2: crowd.PlanLevel(2, "预警", ("启动卡口",), ("公安派出所", "城管执法中队")),
    1: crowd.PlanLevel(1, "管控", ("分流设置",), ("公安派出所", "区网格中心"))}, 0.8, 600_000)
START = datetime(2026, 11, 20, 19, 0, tzinfo=CITY_TZ)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 30_000, 120_000, 600_000]), st.sampled_from(
    [50, 119, 120, 149, 150, 239, 240, 299, 300, 479, 480, 599, 600, 2000])), min_size=1, max_size=40))
def test_up_at_once_down_only_after_a_quiet_period(steps: list[tuple[int, int]]) -> None:
    t, first = 0, steps[0][1]
    state = crowd.start(PLAN, first, 0)
    for dt, count in steps[1:]:
        t += dt
        before = state["level"]
        state, change = crowd.step(state, PLAN, count, t)
        implied = PLAN.implied(count)
        if implied is not None and (before is None or implied < before):
            assert change == "up" and state["level"] == implied          # rises with the count at once
        elif change in ("down", "clear"):
            assert before is not None and state["level"] == implied      # to what the count calls for
            assert count < 0.8 * PLAN.threshold(before)                  # well below the level it leaves
        else:
            assert change is None and state["level"] == before
        assert json.loads(json.dumps(state)) == state


def test_a_crowd_hovering_at_a_threshold_does_not_flap() -> None:
    state = crowd.start(PLAN, 320, 0)   # 预警
    changes = []
    for i in range(1, 120):             # two hours around 300, every minute
        state, change = crowd.step(state, PLAN, 290 if i % 2 else 310, i * 60_000)
        changes.append(change)
    assert set(changes) == {None} and state["level"] == 2


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def counts(kb: Knowledge, camera: str, plan: list[tuple[int, int]]) -> list:
    """(minutes after START, head count) -> the Ingestor's crowd signals of that camera."""
    ingestor = Ingestor(kb)
    out = []
    for i, (minutes, count) in enumerate(plan):
        alert = {"alert_id": f"A{i}", "camera_id": camera, "type": "crowd_count", "confidence": 0.9, "count": count,
                 "ts": (START + timedelta(minutes=minutes)).isoformat()}
        out += ingestor.ingest("camera_alert", alert, 0).signals
    return out


def test_a_crowd_case_follows_its_plan_up_and_down(kb: Knowledge) -> None:
    cases: dict = {}
    engine = CaseEngine(kb, cases, {})
    # 徐家汇商圈: 800 关注, 1500 预警, 3000 管控; step down after 10 minutes below 0.8 x the level's threshold
    signals = counts(kb, "CAM-XH-001", [(0, 500), (1, 900), (3, 1600), (5, 3200), (8, 2500), (20, 2300),
                                         (31, 2300), (40, 1000), (45, 600), (56, 600), (60, 100)])
    assert signals[0].level_hint is None
    outs = [engine.on_signal(s) for s in signals]
    assert not outs[0]                                 # a normal crowd and nothing open: nothing happens
    [case] = cases.values()
    changes = [(t["action"], json.loads(t["detail"]).get("plan_level")) for o in outs for t in o.case_transitions
               if t["action"] in ("response_level", "step_down", "stand_down")]
    assert changes == [("response_level", 3), ("response_level", 2), ("response_level", 1),
                       ("step_down", 2),       # 2,300 < 0.8 x 3,000 from minute 20, still at 31
                       ("stand_down", None)]   # < 0.8 x 1,500 from minute 40 and 600 < 800 at 56: the plan ends
    notes = [n for o in outs for n in o.notifications if n["kind"] == "response_level"]
    assert [n["departments"] for n in notes] == [
        ["公安派出所"], ["公安派出所", "城管执法中队", "街道网格中心"], ["公安派出所", "城管执法中队", "区网格中心"],
        ["公安派出所", "城管执法中队", "街道网格中心"], ["公安派出所", "城管执法中队", "街道网格中心"]]
    assert notes[2]["plan"]["actions"] == ["地铁站限流", "商圈分流", "交通管制"]   # 徐家汇商圈's own 管控
    assert notes[-1]["plan"]["plan_level"] is None and case["crowd"]["level"] is None
    assert case["level"] == case["base_level"]        # stood down: back to the KB route's level
    assert [r["level"] for o in outs for r in o.cases][-1] == case["base_level"]


def test_the_centre_steps_a_level_down_by_action(kb: Knowledge) -> None:
    cases: dict = {}
    engine = CaseEngine(kb, cases, {})
    for s in counts(kb, "CAM-XH-004", [(0, 700)]):     # default plan: 600 管控
        engine.on_signal(s)
    [case_id] = cases

    def act(i: int, actor_kind: str = "center") -> dict:
        return {"action_id": f"SD{i}", "ts": (START + timedelta(minutes=5 + i)).isoformat(), "case_id": case_id,
                "actor_kind": actor_kind, "actor_id": "区网格中心", "action": "step_down"}

    assert engine.on_action(act(0, "department")).rejections                 # only the centre
    levels = []
    for i in range(1, 4):
        out = engine.on_action(act(i))
        assert not out.rejections, out.rejections
        levels.append(cases[case_id]["crowd"]["level"])
        assert [n["kind"] for n in out.notifications] == ["response_level"]
    assert levels == [2, 3, None]
    assert engine.on_action(act(9)).rejections                               # already stood down
