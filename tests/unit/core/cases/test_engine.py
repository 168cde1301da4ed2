"""CaseEngine through its public API with a knowledge-base double (the routing rows of kb.yaml the
tests need): the seed cases, dedup across sources, the side paths, SLA timers and restarts."""
from __future__ import annotations

import copy
import json

import pytest

from streams.bus.codec import iso_to_ms
from streams.core.cases import sla
from streams.core.cases.engine import CaseEngine, Outputs, case_summary
from tests.unit.core.cases.support import KnowledgeDouble, action, ms, signal

COMMITTEE = "怡桂苑居委会"


def engine(cases: dict | None = None, sources: dict | None = None) -> CaseEngine:
    return CaseEngine(KnowledgeDouble(), {} if cases is None else cases, {} if sources is None else sources)


def act(e: CaseEngine, a: dict) -> Outputs:
    """What replay does: fire the timers due before the action, then apply it."""
    out = e.on_tick(iso_to_ms(a["ts"]))
    out.extend(e.on_action(a))
    return out


def open_case(e: CaseEngine, sig) -> str:
    out = e.on_signal(sig)
    assert out.cases, "the signal opened no case"
    return out.cases[-1]["case_id"]


# ------------------------------------------------------------------ seeds


def test_seed_000_group_rent_case_stage_times_and_total_duration():
    e = engine()
    cid = open_case(e, signal("群租", "2016-03-23 15:53", "committee", reporter_id=COMMITTEE,
                              address="钦江路15号", context=["committee", "compound"]))
    assert cid.startswith("310104013-20160323-")
    for a in (action(cid, "handled", "2016-03-24 13:49", "department", "房管办"),
              action(cid, "verify_pass", "2016-03-30 15:30", "committee", COMMITTEE),
              action(cid, "close", "2016-03-30 15:34", "committee", COMMITTEE)):
        out = act(e, a)
        assert not out.rejections, out.rejections
    summary = case_summary(e.cases[cid])
    assert summary["departments"] == ["房管办"] and summary["status"] == "closed"
    assert summary["stages"] == {
        "discover": "2016-03-23T15:53:00+08:00", "register": "2016-03-23T15:53:00+08:00",
        "dispatch": "2016-03-23T15:53:00+08:00",  # immediate: the KB routes committee 群租 at once
        "handle": "2016-03-24T13:49:00+08:00", "verify": "2016-03-30T15:30:00+08:00",
        "close": "2016-03-30T15:34:00+08:00"}
    row = e.case_row(e.cases[cid])
    total = row["handling_ms"] // 60_000
    assert (total // 1440, total % 1440 // 60, total % 60) == (6, 23, 41)  # 6天23小时41分钟


def test_parking_lock_goes_to_level_4_station_at_once():
    e = engine()
    out = e.on_signal(signal("私装地锁", "2026-11-02 09:00", "12345", address="乐山新村5号"))
    row = out.cases[-1]
    assert row["level"] == 4 and row["departments"] == ["居民区工作站"]
    # a hotline call waits for 立案 by the centre; then the level-4 station gets it
    out = e.on_action(action(row["case_id"], "accept", "2026-11-02 09:10", "center", "街道网格中心"))
    assert out.cases[-1]["status"] == "dispatch"
    # the centre dispatches 派遣 (a station may not: the authority policy in kb.yaml)
    refused = e.on_action(action(row["case_id"], "dispatch", "2026-11-02 09:15", "station", "乐山新村工作站"))
    assert refused.rejections and "not authorised" in refused.rejections[0]["reason"]
    out = e.on_action(action(row["case_id"], "dispatch", "2026-11-02 09:20", "center", "街道网格中心"))
    assert out.dispatches[0]["level"] == 4 and out.dispatches[0]["primary_department"] == "居民区工作站"
    assert out.cases[-1]["dispatched_by"] == "station"


def test_level_4_case_from_a_station_is_dispatched_to_the_station_itself():
    out = engine().on_signal(signal("私装地锁", "2026-11-02 09:00", "station", reporter_id="乐山新村工作站"))
    assert out.dispatches and out.dispatches[0]["departments"] == ["居民区工作站"]
    assert out.cases[-1]["status"] == "handle" and out.cases[-1]["level"] == 4


def test_load_bearing_damage_reaches_property_company_and_housing_office_at_once():
    out = engine().on_signal(signal("损坏房屋承重结构", "2026-11-02 10:00", "12345", address="江南新村12号"))
    assert len(out.dispatches) == 1
    d = out.dispatches[0]
    assert d["departments"] == ["物业公司", "房管办"] and d["primary_department"] == "物业公司"
    assert d["ts_ms"] == ms("2026-11-02 10:00")
    kinds = [(n["kind"], n["departments"]) for n in out.notifications]
    assert ("dispatch", ["物业公司", "房管办"]) in kinds


def test_committee_refuses_to_close_a_case_that_failed_verification():
    e = engine()
    cid = open_case(e, signal("群租", "2026-11-02 09:00", "committee", reporter_id=COMMITTEE, context=["committee"]))
    act(e, action(cid, "handled", "2026-11-03 10:00", "department", "房管办"))
    out = act(e, action(cid, "verify_fail", "2026-11-03 15:00", "committee", COMMITTEE, note="仍有群租"))
    assert out.cases[-1]["status"] == "handle" and out.cases[-1]["rework_count"] == 1
    # nobody closes it now: not verified
    out = act(e, action(cid, "close", "2026-11-03 15:05", "committee", COMMITTEE))
    assert out.rejections and "no close without a passed verification" in out.rejections[0]["reason"]
    act(e, action(cid, "handled", "2026-11-04 10:00", "department", "房管办"))
    # only the committee that filed the case verifies and closes it (谁发单、谁验收、谁结案)
    out = act(e, action(cid, "verify_pass", "2026-11-04 10:30", "center", "街道网格中心"))
    assert out.rejections and "谁发单" in out.rejections[0]["reason"]
    act(e, action(cid, "verify_pass", "2026-11-04 11:00", "committee", COMMITTEE))
    out = act(e, action(cid, "close", "2026-11-04 11:05", "center", "街道网格中心"))
    assert out.rejections and "谁发单" in out.rejections[0]["reason"]
    out = act(e, action(cid, "refuse_close", "2026-11-04 16:00", "committee", COMMITTEE, note="不撤单"))
    assert not out.rejections
    row = out.cases[-1]
    assert row["status"] == "handle" and row["rework_count"] == 2 and row["closed_ms"] == 0
    assert json.loads(row["stages"]).get("verify") is None


def test_three_sources_about_one_street_stall_make_one_case_with_three_reporters():
    e = engine()
    place = dict(lat=31.16830, lon=121.43020)
    cid = open_case(e, signal("占道经营", "2026-11-02 09:00", "12345", address="漕溪北路88号", **place))
    camera = signal("占道经营", "2026-11-02 09:12", "camera", address=None, lat=31.16845, lon=121.43031,
                    extra=json.dumps({"camera_id": "CAM-17"}))
    inspector = signal("占道经营", "2026-11-02 09:30", "inspector", address="漕溪北路 88 号", lat=None, lon=None)
    assert e.on_signal(camera).merged == 1
    out = e.on_signal(inspector)
    assert out.merged == 1
    row = out.cases[-1]
    assert row["case_id"] == cid and row["reporters"] == 3
    assert [s.split(":")[0] for s in row["sources"]] == ["12345", "camera", "inspector"]
    # the inspector's self-registration registered the waiting hotline case
    assert row["status"] == "dispatch" and len(e.cases) == 1
    # a re-delivered record changes nothing
    assert not e.on_signal(copy.deepcopy(camera))
    assert e.cases[cid]["reporters"] == 3


def test_a_case_handled_far_past_its_limit_is_red_and_urged():
    e = engine()
    cid = open_case(e, signal("暴露垃圾", "2026-11-02 09:00", "camera", extra=json.dumps({"camera_id": "C1"})))
    act(e, action(cid, "dispatch", "2026-11-02 09:30", "center", "街道网格中心"))
    out = act(e, action(cid, "handled", "2026-11-06 16:00", "department", "绿化市容所"))  # limit: 4 work hours
    kinds = [a["kind"] for a in out.sla_alerts]
    assert kinds[:3] == ["sla_yellow", "sla_red", "urge"]
    handled = [t for t in out.case_transitions if t["action"] == "handled"][0]
    assert handled["light"] == "red" and handled["clock"] == "work_hours"
    assert handled["spent_ms"] > 4 * 3_600_000
    assert case_summary(e.cases[cid])["lights"]["handle"] == "red"
    assert e.cases[cid]["urge_count"] == 1


# ------------------------------------------------------------------ dedup details


def test_garbage_window_is_hours_and_group_rent_window_is_days():
    e = engine()
    open_case(e, signal("暴露垃圾", "2026-11-02 09:00", "12345", address="宜山路100号"))
    assert e.on_signal(signal("暴露垃圾", "2026-11-02 12:00", "12345", address="宜山路100号")).merged == 1
    assert e.on_signal(signal("暴露垃圾", "2026-11-03 12:00", "12345", address="宜山路100号")).merged == 0
    open_case(e, signal("群租", "2026-11-02 09:00", "12345", address="钦江路15号"))
    assert e.on_signal(signal("群租", "2026-11-12 09:00", "12345", address="钦江路15号")).merged == 1


def test_other_places_and_incompatible_categories_do_not_merge():
    e = engine()
    open_case(e, signal("占道经营", "2026-11-02 09:00", "12345", lat=31.1683, lon=121.4302, address=None))
    far = signal("占道经营", "2026-11-02 09:10", "12345", lat=31.1703, lon=121.4302, address=None)  # ~220 m north
    assert e.on_signal(far).merged == 0
    other = signal("暴露垃圾", "2026-11-02 09:10", "12345", lat=31.1683, lon=121.4302, address=None)
    assert e.on_signal(other).merged == 0
    compatible = signal("无照经营", "2026-11-02 09:20", "12345", lat=31.16835, lon=121.43025, address=None)
    assert e.on_signal(compatible).merged == 1
    assert len(e.cases) == 3


def test_sensor_alert_stays_on_its_case_until_closed():
    e = engine()
    extra = json.dumps({"device_id": "VIB-001"})
    cid = open_case(e, signal("历史建筑振动超限", "2026-11-02 09:00", "sensor", extra=extra, address="武康路99号"))
    # weeks later, the same device: same case, whatever the window
    assert e.on_signal(signal("历史建筑振动超限", "2026-11-20 09:00", "sensor", extra=extra, address=None,
                              lat=None, lon=None)).merged == 1
    doc = e.cases[cid]
    doc = copy.deepcopy(doc)
    doc["open"], doc["stage"] = False, "closed"
    e.cases[cid] = doc
    e.rebuild()
    assert e.on_signal(signal("历史建筑振动超限", "2026-11-21 09:00", "sensor", extra=extra)).merged == 0


def test_a_new_sensor_case_sends_an_alarm():
    out = engine().on_signal(signal("历史建筑振动超限", "2026-11-02 09:00", "sensor",
                                    extra=json.dumps({"device_id": "VIB-9"})))
    assert [n["kind"] for n in out.notifications] == ["dispatch", "alarm"]
    assert out.notifications[1]["departments"] == ["街道管理办", "房管办"]


# ------------------------------------------------------------------ side paths


def _dispatched(e: CaseEngine, category: str = "占道经营") -> str:
    cid = open_case(e, signal(category, "2026-11-02 09:00", "inspector"))
    out = act(e, action(cid, "dispatch", "2026-11-02 09:10", "center", "街道网格中心"))
    assert out.dispatches
    return cid


def test_return_then_redispatch_to_another_department():
    e = engine()
    cid = _dispatched(e)
    out = act(e, action(cid, "return", "2026-11-02 09:40", "department", "城管执法中队", note="不属于本部门"))
    assert out.cases[-1]["status"] == "dispatch"
    out = act(e, action(cid, "dispatch", "2026-11-02 09:50", "center", "街道网格中心", departments=["市场监管所"]))
    assert out.dispatches[0]["departments"] == ["市场监管所"]
    out = act(e, action(cid, "handled", "2026-11-02 10:00", "department", "城管执法中队"))
    assert "the case is not dispatched to 城管执法中队" in out.rejections[0]["reason"]


def test_escalate_up_the_levels_then_dispatch_down():
    e = engine()
    cid = _dispatched(e)  # level 3: the street centre dispatched it
    levels = []
    for t, t_down, centre in (("10:00", "10:10", "街道网格中心"), ("10:20", "10:25", "区网格中心")):
        out = act(e, action(cid, "escalate", f"2026-11-02 {t}", "center", centre))
        assert not out.rejections and out.cases[-1]["status"] == "dispatch"
        assert [n["kind"] for n in out.notifications] == ["escalate"]
        levels.append(out.cases[-1]["level"])
        out = act(e, action(cid, "dispatch", f"2026-11-02 {t_down}", "center", "区网格中心"))
        assert out.dispatches  # dispatched down again (双向联动派发)
    assert levels == [2, 1]
    out = act(e, action(cid, "escalate", "2026-11-02 10:30", "center", "区网格中心"))
    assert "already at level 1" in out.rejections[0]["reason"]
    out = act(e, action(cid, "dispatch", "2026-11-02 10:40", "center", "区网格中心",
                        departments=["城管执法中队", "公安派出所"]))
    assert out.dispatches[0]["level"] == 1 and out.cases[-1]["dispatched_by"] == "district"
    assert out.dispatches[0]["departments"] == ["城管执法中队", "公安派出所"]


def test_suspend_stops_the_clock_and_resume_moves_the_deadline():
    e = engine()
    cid = _dispatched(e)
    before = e.cases[cid]["timer"]["deadline_ms"]
    act(e, action(cid, "suspend", "2026-11-02 10:00", "center", "街道网格中心", note="等待产权人"))
    assert e.case_row(e.cases[cid])["status"] == "suspended"
    # while suspended nothing fires and other actions are refused
    assert not e.on_tick(ms("2026-11-20 10:00")).sla_alerts
    out = e.on_action(action(cid, "handled", "2026-11-20 10:00", "department", "城管执法中队"))
    assert "suspended" in out.rejections[0]["reason"]
    act(e, action(cid, "resume", "2026-11-20 10:00", "center", "街道网格中心"))
    timer = e.cases[cid]["timer"]
    used = sla.elapsed_ms(timer["start_ms"], ms("2026-11-20 10:00"), timer["clock"], timer["suspended"])
    assert used == 50 * 60_000  # 09:10 → 10:00 only
    assert timer["deadline_ms"] > before


def test_extend_moves_the_deadline_and_void_ends_the_case():
    e = engine()
    cid = _dispatched(e)
    d0 = e.cases[cid]["timer"]["deadline_ms"]
    # 延期 from the department is a request: nothing moves until the centre grants it
    out = act(e, action(cid, "extend", "2026-11-02 09:20", "department", "城管执法中队", extend_minutes=120))
    assert out.case_transitions[0]["action"] == "extend_request" and e.cases[cid]["timer"]["deadline_ms"] == d0
    assert act(e, action(cid, "extend", "2026-11-02 09:21", "department", "城管执法中队")).rejections
    out = act(e, action(cid, "extend", "2026-11-02 09:22", "center", "街道网格中心"))   # granted as asked
    assert e.cases[cid]["timer"]["deadline_ms"] == sla.deadline(d0, "work_hours", 120)
    assert out.case_transitions[0]["action"] == "extend"
    assert json.loads(out.case_transitions[0]["detail"])["requested_by"] == "城管执法中队"
    out = act(e, action(cid, "void", "2026-11-02 09:30", "department", "城管执法中队"))
    assert "only the centre" in out.rejections[0]["reason"]
    out = act(e, action(cid, "void", "2026-11-02 09:30", "center", "街道网格中心", note="重复案件"))
    assert out.cases[-1]["status"] == "void"
    assert "case is void" in act(e, action(cid, "urge", "2026-11-02 09:40", "center", "x")).rejections[0]["reason"]


def test_inspector_handled_on_the_spot_with_photos_goes_straight_to_verify():
    e = engine()
    out = e.on_signal(signal("暴露垃圾", "2026-11-02 09:00", "inspector", reporter_id="INS-7", handled_on_spot=True,
                             photos=["before.jpg"], after_photos=["after.jpg"]))
    row = out.cases[-1]
    assert row["status"] == "verify" and row["quick_handled"] == 1 and not out.dispatches
    cid = row["case_id"]
    act(e, action(cid, "verify_pass", "2026-11-02 10:00", "center", "街道网格中心"))
    out = act(e, action(cid, "close", "2026-11-02 10:05", "inspector", "INS-7"))
    assert out.cases[-1]["status"] == "closed" and out.cases[-1]["on_time"] == 1
    # without the after photo it is an ordinary report
    out = e.on_signal(signal("暴露垃圾", "2026-11-02 09:00", "inspector", address="别处1号", lat=31.2, lon=121.45,
                             handled_on_spot=True, photos=["before.jpg"]))
    assert out.cases[-1]["status"] == "dispatch"


def test_street_quick_handling():
    e = engine()
    cid = open_case(e, signal("占道经营", "2026-11-02 09:00", "inspector"))
    out = act(e, action(cid, "handled", "2026-11-02 09:20", "center", "街道网格中心", note="街镇快速处置"))
    row = out.cases[-1]
    assert row["status"] == "verify" and row["quick_handled"] == 1


def test_unknown_case_bad_time_and_duplicate_actions():
    e = engine()
    out = e.on_action(action("310104013-20261102-deadbeef", "urge", "2026-11-02 09:00", "center", "c"))
    assert "unknown case" in out.rejections[0]["reason"]
    cid = _dispatched(e)
    a = action(cid, "urge", "2026-11-02 09:20", "center", "区网格中心")
    first = e.on_action(a)
    assert first.cases[-1]["urge_count"] == 1 and first.notifications[0]["kind"] == "urge"
    assert not e.on_action(dict(a))  # re-delivered: no change
    bad = action(cid, "urge", "2026-11-02 09:20", "center", "c")
    bad["ts"] = "yesterday"
    assert "ISO-8601" in e.on_action(bad).rejections[0]["reason"]
    early = action(cid, "handled", "2026-11-02 08:00", "department", "城管执法中队")
    assert "before the current stage" in e.on_action(early).rejections[0]["reason"]
    by_source = action(None, "urge", "2026-11-02 09:30", "center", "c")
    by_source["case_id"], by_source["source_id"] = None, e.cases[cid]["sources"][0].split(":", 1)[1]
    assert e.on_action(by_source).cases[-1]["urge_count"] == 2


# ------------------------------------------------------------------ timers


def test_yellow_and_red_fire_once_each_and_survive_a_restart():
    cases, sources = {}, {}
    e = engine(cases, sources)
    cid = _dispatched(e)  # handle: 4 work hours from 09:10 → deadline 15:10
    timer = cases[cid]["timer"]
    assert sla.deadline(ms("2026-11-02 09:10"), "work_hours", 240) == timer["deadline_ms"] == ms("2026-11-02 15:10")
    assert e.on_tick(ms("2026-11-02 14:00")).sla_alerts == []
    y = e.on_tick(ms("2026-11-02 14:30"))   # 80% of 240 min = 192 min → 14:22
    assert [a["kind"] for a in y.sla_alerts] == ["sla_yellow"] and y.sla_alerts[0]["ts_ms"] == ms("2026-11-02 14:22")
    assert e.on_tick(ms("2026-11-02 14:31")).sla_alerts == []
    # restart: a new engine over the same state
    e2 = engine(cases, sources)
    e2.rebuild()
    r = e2.on_tick(ms("2026-11-02 16:00"))
    assert [a["kind"] for a in r.sla_alerts] == ["sla_red", "urge"]
    assert {n["kind"] for n in r.notifications} == {"sla_red", "urge"}
    e3 = engine(cases, sources)
    e3.rebuild()
    assert not e3.on_tick(ms("2026-11-30 16:00"))
    assert cases[cid]["urge_count"] == 1 and e.case_row(cases[cid])["light"] == "red"


def test_red_escalates_when_the_kb_says_so():
    e = engine()
    cid = open_case(e, signal("损坏房屋承重结构", "2026-11-02 10:00", "12345"))
    out = e.on_tick(ms("2026-11-02 13:00"))  # handle limit: 2 emergency hours
    assert [a["kind"] for a in out.sla_alerts] == ["sla_yellow", "sla_red", "urge", "escalate"]
    assert e.cases[cid]["level"] == 2
    esc = [n for n in out.notifications if n["kind"] == "escalate"][0]
    assert esc["departments"] == ["区网格中心"]
    assert len({n["event_id"] for n in out.notifications}) == len(out.notifications)


def test_tick_cost_is_per_due_timer_and_per_partition():
    e = engine()
    ids = [open_case(e, signal("占道经营", "2026-11-02 09:00", "inspector", lat=31.1 + i * 0.01, lon=121.4,
                               address=f"路{i}号")) for i in range(50)]
    for p, cid in enumerate(ids):
        e.cases[cid]["partition"] = p % 2
    e.rebuild()
    assert e.timers_pending() == 100
    assert not e.on_tick(ms("2026-11-02 09:10"))           # nothing due yet: heads only
    assert e.timers_pending() == 100
    out = e.on_tick(ms("2026-11-02 10:30"), partition=0)   # only partition 0's cases
    assert {r["case_id"] for r in out.cases} == {c for i, c in enumerate(ids) if i % 2 == 0}
    assert e.next_due(1) == ms("2026-11-02 09:48")         # register 60 min → yellow at 48 min
    assert e.next_due(0) is None                           # partition 0: both lights fired, heap empty


def test_rows_have_the_contract_columns():
    e = engine()
    cid = _dispatched(e)
    out = act(e, action(cid, "handled", "2026-11-02 16:00", "department", "城管执法中队"))
    assert set(out.cases[-1]) >= {
        "case_id", "version", "updated_ms", "opened_ms", "category_code", "category_name", "departments", "level",
        "status", "origin", "street", "street_code", "community", "cell", "address", "lat", "lon", "reporters",
        "sources", "light", "deadline_ms", "rework_count", "urge_count", "quick_handled", "dispatched_by",
        "closed_ms", "on_time", "handling_ms", "kb_version", "stages", "units"}
    assert set(out.case_transitions[-1]) == {
        "event_id", "case_id", "ts_ms", "from_stage", "to_stage", "action", "actor_kind", "actor_id", "spent_ms",
        "clock", "light", "category_code", "street", "departments", "detail"}
    assert set(out.sla_alerts[0]) == {"alert_id", "case_id", "ts_ms", "stage", "light", "kind", "departments",
                                      "deadline_ms"}
    versions = [r["version"] for r in out.cases]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert set(out.notifications[0]) == {"kind", "case_id", "ts_ms", "departments", "units", "category_code",
                                         "category_name", "level", "deadline_ms", "address", "lat", "lon", "cell",
                                         "street", "event_id"}


def test_routing_errors_are_not_swallowed():
    e = engine()
    s = signal("占道经营", "2026-11-02 09:00")
    s.category_code = "E9999"
    with pytest.raises(KeyError, match="E9999"):
        e.on_signal(s)


def test_purge_forgets_old_closed_cases_only():
    e = engine()
    done = open_case(e, signal("暴露垃圾", "2026-11-02 09:00", "inspector", reporter_id="INS-7", handled_on_spot=True,
                               photos=["b.jpg"], after_photos=["a.jpg"]))
    act(e, action(done, "verify_pass", "2026-11-02 10:00", "center", "街道网格中心"))
    act(e, action(done, "close", "2026-11-02 10:05", "center", "街道网格中心"))
    still_open = _dispatched(e)
    assert e.purge(ms("2026-11-01 00:00")) == 0
    assert e.purge(ms("2026-12-01 00:00"), partition=3) == 0, "another partition's cases are not touched"
    assert e.purge(ms("2026-12-01 00:00"), partition=0) == 1
    assert set(e.cases) == {still_open}
    assert set(e.sources.values()) == {still_open}


def test_erase_takes_a_callers_pseudonym_out_of_every_case_and_keeps_the_cases():
    e = engine()
    first = open_case(e, signal("占道经营", "2026-11-02 09:00", "12345", reporter_id="caller-k1-aaaa"))
    out = e.on_signal(signal("占道经营", "2026-11-02 09:05", "12345", reporter_id="caller-k1-bbbb"))
    assert out.merged and e.cases[first]["reporters"] == 2
    other = open_case(e, signal("暴露垃圾", "2026-11-02 09:10", "12345", reporter_id="caller-k0-aaaa",
                                address="漕溪北路88号", lat=31.1900, lon=121.4400))
    before = copy.deepcopy(e.cases[first])
    out, changed = e.erase(["caller-k1-aaaa", "caller-k0-aaaa"], "req-1")
    assert changed == 2 and {r["case_id"] for r in out.cases} == {first, other}
    doc = e.cases[first]
    assert "caller-k1-aaaa" not in json.dumps(doc) and "caller-k1-bbbb" in json.dumps(doc)
    assert doc["reporters"] == 2 and doc["origin_reporter"] == "erased" and doc["version"] == before["version"] + 1
    assert "caller-k0-aaaa" not in json.dumps(e.cases[other])
    assert e.erase(["caller-k1-aaaa"], "req-2") == (Outputs(), 0), "nothing left to erase"
    assert e.erase(["caller-k1-bbbb"], "req-3", partition=2)[1] == 0, "only the given partition's cases"


def test_a_growing_crowd_raises_the_case_level():
    e = engine()
    extra = json.dumps({"camera_id": "CAM-XJH-001"})
    cid = open_case(e, signal("占道经营", "2026-11-02 19:00", "camera", extra=extra, level_hint=3))
    assert e.cases[cid]["level"] == 3
    out = e.on_signal(signal("占道经营", "2026-11-02 19:10", "camera", extra=extra, level_hint=1))
    assert out.merged == 1 and e.cases[cid]["level"] == 1
    assert [n["kind"] for n in out.notifications] == ["escalate"]
    assert out.notifications[0]["departments"] == ["区网格中心"]
    assert e.cases[cid]["reporters"] == 2  # two alerts, two reporter keys (no reporter_id given by the helper)


def test_signals_only_merge_with_cases_of_their_own_partition():
    e = engine()
    cid = open_case(e, signal("占道经营", "2026-11-02 09:00", "12345", address="钦江路101号"))  # partition 0
    other = e.on_signal(signal("占道经营", "2026-11-02 09:05", "12345", address="钦江路101号"), partition=1)
    assert other.merged == 0 and other.cases[-1]["case_id"] != cid
    assert e.on_signal(signal("占道经营", "2026-11-02 09:06", "12345", address="钦江路101号"), partition=1).merged == 1
    assert e.cases[cid]["reporters"] == 1


class JsonTable:
    """Like the worker's view of a Faust table with value_serializer="json": get() returns a fresh
    decoded copy, only assignments persist, and there is no items()/values()."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def __getitem__(self, key: str):
        if key not in self.data:
            raise KeyError(key)
        return json.loads(self.data[key])

    def get(self, key: str, default=None):
        return json.loads(self.data[key]) if key in self.data else default

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = json.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self):
        return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)


def test_engine_works_over_a_json_table_and_restarts_from_it():
    cases, sources = JsonTable(), JsonTable()
    e = CaseEngine(KnowledgeDouble(), cases, sources)  # type: ignore[arg-type]
    cid = e.on_signal(signal("群租", "2016-03-23 15:53", "committee", reporter_id=COMMITTEE,
                             context=["committee"])).cases[-1]["case_id"]
    assert sources.get(e.cases[cid]["sources"][0].split(":", 1)[1]) == cid
    act(e, action(cid, "handled", "2016-03-24 13:49", "department", "房管办"))
    assert e.on_signal(signal("群租", "2016-03-25 10:00", "12345")).merged == 1
    restarted = CaseEngine(KnowledgeDouble(), cases, sources)  # type: ignore[arg-type]
    restarted.rebuild()
    out = restarted.on_tick(ms("2016-03-30 15:00"))  # verify: 2 work days from 24 Mar 13:49 → overdue
    assert [a["kind"] for a in out.sla_alerts] == ["sla_yellow", "sla_red", "urge"]
    act(restarted, action(cid, "verify_pass", "2016-03-30 15:30", "committee", COMMITTEE))
    act(restarted, action(cid, "close", "2016-03-30 15:34", "committee", COMMITTEE))
    doc = cases[cid]
    assert doc["stage"] == "closed" and doc["reporters"] == 2 and doc["urge_count"] == 1
    again = CaseEngine(KnowledgeDouble(), cases, sources)  # type: ignore[arg-type]
    again.rebuild()
    assert again.timers_pending() == 0 and not again.on_tick(ms("2016-04-30 00:00"))


def test_unlocated_case_id_prefix_matches_the_worker_key_and_handlers_act_as_departments():
    s = signal("占道经营", "2026-11-02 09:00", "inspector", lat=None, lon=None)
    s.street_code = None
    e = engine()
    cid = open_case(e, s)
    assert cid.startswith("unlocated-20261102-")
    act(e, action(cid, "dispatch", "2026-11-02 09:10", "center", "街道网格中心"))
    out = act(e, action(cid, "handled", "2026-11-02 09:20", "committee", "城管执法中队"))
    assert "not authorised: committee 城管执法中队 may not 'handled'" in out.rejections[0]["reason"]


def test_a_report_merged_into_a_suspended_case_waits_for_resume():
    """挂账: a waiting hotline case is suspended; an inspector's report and a crowd's level hint merge into it
    without registering or escalating it (its clock is stopped); after resume the case goes on as usual.
    (Found by the stateful lifecycle test: the merge used to read the stopped clock and crash.)"""
    e = engine()
    place = dict(lat=31.16830, lon=121.43020, address="漕溪北路88号")
    cid = open_case(e, signal("占道经营", "2026-11-02 09:00", "12345", **place))
    act(e, action(cid, "suspend", "2026-11-02 09:05", "center", "街道网格中心", note="等待产权人"))
    out = e.on_signal(signal("占道经营", "2026-11-02 09:30", "inspector", level_hint=1, **place))
    assert out.merged == 1 and not out.dispatches and not out.rejections
    row = out.cases[-1]
    assert row["status"] == "suspended" and row["reporters"] == 2 and e.cases[cid]["level"] != 1
    act(e, action(cid, "resume", "2026-11-02 10:00", "center", "街道网格中心"))
    assert act(e, action(cid, "dispatch", "2026-11-02 10:05", "center", "街道网格中心")).dispatches


def test_a_replayed_report_is_recognised_by_its_case_when_another_open_case_is_nearer_in_time():
    """A crash after the case documents reached their changelog but before the source index did: the
    batch replays with ``sources`` missing the report. Two open cases match its place (A west, B east,
    80 m apart; the report in the middle joined B, the nearer in time then), and later reports moved
    A's last signal closer to the report's time than B's: dedup alone now picks A. The replay must
    still see that B holds the report -- not merge it into A (one report in two cases)."""
    e = engine()
    west, middle, east = dict(lon=121.43000), dict(lon=121.43042), dict(lon=121.43084)
    far_west, far_east = dict(lon=121.42980), dict(lon=121.43104)   # ~59 m from the middle: one case each
    where = dict(lat=31.16830, address=None)
    a = open_case(e, signal("暴露垃圾", "2026-11-02 09:00", "camera", **where, **west))
    b = open_case(e, signal("暴露垃圾", "2026-11-02 09:10", "camera", **where, **east))
    assert a != b   # 80 m apart: beyond the 50 m radius of 暴露垃圾
    report = signal("暴露垃圾", "2026-11-02 09:20", "12345", **where, **middle)
    assert e.on_signal(report).cases[-1]["case_id"] == b          # B: both match, B is the nearer in time
    assert e.on_signal(signal("暴露垃圾", "2026-11-02 09:30", "camera", **where, **far_west)).cases[-1]["case_id"] == a
    assert e.on_signal(signal("暴露垃圾", "2026-11-02 09:50", "camera", **where, **far_east)).cases[-1]["case_id"] == b
    assert e.index.find(report, e.cases) == a                      # dedup alone would now say A
    del e.sources[report.source_id]                                # the index entry lost in the crash
    assert not e.on_signal(copy.deepcopy(report))                  # re-delivered: changes nothing
    assert report.signal_id not in e.cases[a]["signal_ids"]
    assert e.sources[report.source_id] == b                        # and the index entry is back
