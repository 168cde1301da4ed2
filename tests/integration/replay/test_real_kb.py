"""The engine with the real sample-city knowledge base (Knowledge.load()): routing as the
seeds say, located with the real gazetteer. Signals are built as the ingest builds them."""
from __future__ import annotations

import itertools
import json

import pytest

from streams.bus.codec import iso_to_ms
from streams.core.cases.engine import CaseEngine, case_summary
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return Knowledge.load()


def make_signal(k: Knowledge, category: str, when: str, kind: str, source_id: str, address: str,
                reporter: str | None = None, **kw) -> Signal:
    location, reason = k.locate(None, None, address)
    assert location is not None, reason
    cat = k.category(category)
    context = list(location.context) + ([kind] if kind in ("committee", "station", "inspector") else [])
    return Signal(signal_id=f"sig-{source_id}", source="field", source_kind=kind, source_id=source_id,
                  ts_ms=iso_to_ms(when), ingest_ms=iso_to_ms(when), category_code=cat.code, category_name=cat.name,
                  confidence=1.0, context=context, lat=location.lat, lon=location.lon, cell=location.cell,
                  community=location.community, street=location.street, street_code=location.street_code,
                  district=location.district, address=location.address, reporter_id=reporter or source_id,
                  reporter_kind=kind, **kw)


_ACTION_IDS = itertools.count(1)


def action(case_id: str, name: str, when: str, kind: str, actor: str) -> dict:
    return {"action_id": f"rk-{next(_ACTION_IDS)}", "ts": when, "case_id": case_id, "source_id": None,
            "actor_kind": kind, "actor_id": actor, "action": name, "note": None, "photos": None,
            "extend_minutes": None, "departments": None}


def test_seed_000_with_the_real_kb(knowledge):
    e = CaseEngine(knowledge, {}, {})
    out = e.on_signal(make_signal(knowledge, "群租", "2016-03-23T15:53:00+08:00", "committee", "HM-1", "钦江路15号",
                                  reporter="怡桂苑居委会"))
    cid = out.cases[-1]["case_id"]
    assert out.dispatches[0]["departments"] == ["房管办"]
    assert out.cases[-1]["kb_version"] == knowledge.version
    for a in (action(cid, "handled", "2016-03-24T13:49:00+08:00", "department", "房管办"),
              action(cid, "verify_pass", "2016-03-30T15:30:00+08:00", "committee", "怡桂苑居委会"),
              action(cid, "close", "2016-03-30T15:34:00+08:00", "committee", "怡桂苑居委会")):
        e.on_tick(iso_to_ms(a["ts"]))
        assert not e.on_action(a).rejections
    summary = case_summary(e.cases[cid])
    assert summary["stages"]["close"] == "2016-03-30T15:34:00+08:00"
    assert summary["stages"]["handle"] == "2016-03-24T13:49:00+08:00"
    assert e.case_row(e.cases[cid])["handling_ms"] == ((6 * 24 + 23) * 60 + 41) * 60_000


def test_real_kb_routing_of_the_seed_categories(knowledge):
    e = CaseEngine(knowledge, {}, {})
    lock = e.on_signal(make_signal(knowledge, "私装地锁", "2026-11-02T09:00:00+08:00", "station", "ST-1", "乐山路33弄"))
    assert lock.cases[-1]["level"] == 4 and lock.dispatches[0]["departments"] == ["居民区工作站"]
    wall = e.on_signal(make_signal(knowledge, "损坏房屋承重结构", "2026-11-02T09:30:00+08:00", "12345", "C-2",
                                   "斜土路1175弄"))
    assert wall.dispatches[0]["departments"] == ["物业公司", "房管办"]
    assert wall.dispatches[0]["ts_ms"] == iso_to_ms("2026-11-02T09:30:00+08:00")
    # the emergency clock runs out in 2 hours: red, 催办 and (escalate_on_red) 上报
    out = e.on_tick(iso_to_ms("2026-11-02T12:00:00+08:00"))
    kinds = {(a["case_id"], a["kind"]) for a in out.sla_alerts}
    wid = wall.cases[-1]["case_id"]
    assert {(wid, "sla_red"), (wid, "urge"), (wid, "escalate")} <= kinds
    assert json.loads(json.dumps(case_summary(e.cases[wid])))["lights"]["handle"] == "red"


def test_dispatch_rows_carry_instance_and_kind(knowledge):
    """The case goes to the street's own 房管办; the instance may act for it, and a centre may dispatch to
    a named instance (or a kind: the instance of the case's street is picked)."""
    e = CaseEngine(knowledge, {}, {})
    out = e.on_signal(make_signal(knowledge, "群租", "2026-11-02T09:00:00+08:00", "committee", "HM-9", "钦江路15号",
                                  reporter="怡桂苑居委会"))
    cid = out.cases[-1]["case_id"]
    [row] = out.dispatches
    assert row["departments"] == ["房管办"] and row["units"] == ["虹梅街道房管办"]
    assert row["primary_department"] == "房管办" and row["primary_unit"] == "虹梅街道房管办"
    assert out.cases[-1]["units"] == ["虹梅街道房管办"] and out.notifications[0]["units"] == ["虹梅街道房管办"]
    returned = e.on_action(action(cid, "return", "2026-11-02T10:00:00+08:00", "department", "虹梅街道房管办"))
    assert not returned.rejections  # the instance acts as its kind
    redispatched = e.on_action({**action(cid, "dispatch", "2026-11-02T10:30:00+08:00", "center", "街道网格中心"),
                                "departments": ["徐家汇街道城管中队", "房管办"]})
    assert not redispatched.rejections
    [row] = redispatched.dispatches
    assert row["departments"] == ["城管执法中队", "房管办"] and row["units"] == ["徐家汇街道城管中队", "虹梅街道房管办"]
    wrong = e.on_action(action(cid, "handled", "2026-11-02T11:00:00+08:00", "department", "斜土街道城管中队"))
    assert "the case is not dispatched to 斜土街道城管中队" in wrong.rejections[0]["reason"]
    assert "as ['徐家汇街道城管中队', '虹梅街道房管办']" in wrong.rejections[0]["reason"]
    right = e.on_action(action(cid, "handled", "2026-11-02T11:10:00+08:00", "department", "徐家汇街道城管中队"))
    assert not right.rejections
