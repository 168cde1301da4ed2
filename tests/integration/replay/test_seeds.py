"""``streams replay`` over the seed scenarios (tests/data/replay_*.jsonl) with the real knowledge base
and ingest, writing to a real embedded ClickHouse (chdb); KPIs by plain SQL."""
from __future__ import annotations

import io
import json
import random

import pytest

from streams import cli
from streams.replay import replay
from streams.settings import Settings
from tests.fixtures.clickhouse import open_test_store
from tests.paths import REPO_ROOT, TEST_DATA

DATA = TEST_DATA


def run(name: str, store=None, lines: list[str] | None = None) -> tuple[list[dict], str, object]:
    out, err = io.StringIO(), io.StringIO()
    if lines is None:
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    report = replay(lines, Settings(), store, out, err=err)
    return [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue(), report


def by_category(cases: list[dict]) -> dict[str, dict]:
    result = {c["category_name"]: c for c in cases}
    assert len(result) == len(cases), "one case per category in these files"
    return result


def test_seed_000_group_rent_replays_to_the_article_times():
    cases, err, report = run("replay_seed000.jsonl")
    assert report.invalid == 0 and report.rejected_actions == 0, err
    assert len(cases) == 1
    case = cases[0]
    assert case["category_name"] == "群租" and case["departments"] == ["房管办"] and case["status"] == "closed"
    assert case["stages"] == {
        "discover": "2016-03-23T15:53:00+08:00",   # 居委会 接报并立案
        "register": "2016-03-23T15:53:00+08:00",
        "dispatch": "2016-03-23T15:53:00+08:00",   # the KB routes a committee's 群租 at once
        "handle": "2016-03-24T13:49:00+08:00",     # 房管办 处置完毕
        "verify": "2016-03-30T15:30:00+08:00",     # 核查: 没有群租现象
        "close": "2016-03-30T15:34:00+08:00"}      # 立案人核准并同意结案
    assert case["reporters"] == 1 and case["sources"] == ["committee:HM-YGY-20160323-01"]
    assert set(case) == {"case_id", "category_name", "departments", "level", "status", "stages", "lights",
                         "reporters", "sources"}
    assert case["case_id"].split("-")[1] == "20160323"


def test_seed_scenarios():
    cases, err, report = run("replay_seeds.jsonl")
    c = by_category(cases)
    assert c["私装地锁"]["level"] == 4 and c["私装地锁"]["departments"] == ["居民区工作站"]
    wall = c["损坏房屋承重结构"]
    assert wall["departments"] == ["物业公司", "房管办"]
    assert wall["stages"]["dispatch"] == wall["stages"]["discover"] == "2026-11-02T09:30:00+08:00"  # at once
    # the committee refuses to close a case whose verification failed; the centre cannot close it
    refused = c["群租"]
    assert refused["status"] == "handle" and "close" not in refused["stages"] and "verify" not in refused["stages"]
    reasons = {r["action_id"]: r["reason"] for r in report.rejections}
    assert "谁发单" in reasons["A-0004"] and "not authorised: center 街道网格中心" in reasons["A-0004"]
    assert "谁发单" in reasons["A-0006"], "the centre does not verify the committee's own case"
    assert "action A-0004 rejected" in err
    stall = c["占道经营"]
    assert stall["reporters"] == 3
    assert [s.split(":")[0] for s in stall["sources"]] == ["12345", "camera", "inspector"]
    late = c["非法小广告"]
    assert late["lights"]["handle"] == "red" and late["status"] == "verify"
    assert late["stages"]["handle"] == "2026-11-09T16:00:00+08:00"


def test_input_order_does_not_matter_and_replay_is_deterministic():
    lines = (DATA / "replay_seeds.jsonl").read_text(encoding="utf-8").splitlines()
    first, _, _ = run("", lines=lines)
    shuffled = lines[:]
    random.Random(7).shuffle(shuffled)
    second, _, _ = run("", lines=shuffled)
    assert first == second


def test_invalid_lines_are_reported_with_line_numbers_and_counted():
    cases, err, report = run("replay_invalid.jsonl")
    assert report.invalid == 6 and report.records == 1 and len(cases) == 1
    lines = err.splitlines()
    assert lines[0].startswith("line 2: not JSON")
    assert lines[1].startswith("line 3: ") and "'line'" in lines[1]
    assert lines[2].startswith("line 4: unknown topic 'weather.feed'")
    assert lines[3].startswith("line 5: ") and "UTC offset" in lines[3]
    assert lines[4] == "line 6: empty line"
    assert lines[5].startswith("line 7: ") and "lat" in lines[5]


def test_cli_replay_json_and_exit_status(capsys):
    assert cli.main(["replay", str(DATA / "replay_seed000.jsonl"), "--json", "--no-store"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[0])["status"] == "closed"
    assert "1 cases" in captured.err
    assert cli.main(["replay", str(DATA / "replay_invalid.jsonl"), "--json", "--no-store"]) == 1
    assert "6 invalid" in capsys.readouterr().err


def test_replay_writes_rows_and_the_kpis_come_out_by_plain_sql(request):
    store = open_test_store("chdb", request)
    try:
        for name in ("replay_seed000.jsonl", "replay_seeds.jsonl"):
            _, err, report = run(name, store)
            assert report.invalid == 0, err
        q = store.query
        cases = q("SELECT case_id, status, on_time, handling_ms, rework_count, reporters, origin, departments, "
                  "level, light FROM cases FINAL ORDER BY opened_ms")
        assert len(cases) == 6
        seed = cases[0]
        assert seed["status"] == "closed" and seed["handling_ms"] == ((6 * 24 + 23) * 60 + 41) * 60_000
        kpi = q("SELECT countIf(status = 'closed') / count() AS close_rate, "      # 结案率
                "countIf(on_time = 1) / greatest(countIf(status = 'closed'), 1) AS on_time_rate, "  # 按期结案率
                "countIf(rework_count > 0) / count() AS rework_rate FROM cases FINAL")[0]          # 返工率
        assert kpi["close_rate"] == pytest.approx(1 / 6)
        assert kpi["on_time_rate"] == 0.0  # the seed case's 核查 took 6 days against a 2-work-day limit
        assert kpi["rework_rate"] == pytest.approx(1 / 6)
        by_origin = {r["origin"]: r["n"] for r in q("SELECT origin, count() AS n FROM cases FINAL GROUP BY origin")}
        assert by_origin == {"committee": 2, "12345": 3, "inspector": 1}
        avg = q("SELECT departments[1] AS department, avg(handling_ms) AS avg_ms FROM cases FINAL "
                "WHERE status = 'closed' GROUP BY department")
        assert avg == [{"department": "房管办", "avg_ms": float(seed["handling_ms"])}]
        steps = q("SELECT from_stage, to_stage, action, spent_ms, clock, light FROM case_transitions FINAL "
                  "WHERE case_id = %(cid)s ORDER BY ts_ms, visitParamExtractUInt(detail, 'seq')",
                  {"cid": seed["case_id"]})
        actions = [s["action"] for s in steps]
        assert actions[:3] == ["discover", "register", "dispatch"] and actions[-1] == "close"
        handle = [s for s in steps if s["action"] == "handled"][0]
        assert handle["clock"] == "work_days" and handle["light"] == "green" and handle["spent_ms"] > 0
        alerts = q("SELECT kind, count() AS n FROM sla_alerts FINAL GROUP BY kind ORDER BY kind")
        assert {a["kind"] for a in alerts} >= {"sla_yellow", "sla_red", "urge"}
        dispatched = q("SELECT primary_department, level FROM dispatches FINAL ORDER BY ts_ms")
        assert {"primary_department": "物业公司", "level": 3} in dispatched
        signals = q("SELECT count() AS n FROM signals FINAL")[0]["n"]
        assert signals == 8
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


def test_unusable_records_and_triage_are_kept_not_dropped(request):
    store = open_test_store("chdb", request)
    try:
        cases, err, report = run("replay_unusable.jsonl", store)
        assert cases == [] and report.invalid == 0
        assert report.unusable == 1 and "line 1: unknown camera 'CAM-NOPE'" in err
        assert report.triage == 2 and report.rejected_actions == 1
        assert "unknown case XH07-20261102-00000000" in report.rejections[0]["reason"]
        dead = store.query("SELECT topic, offset, reason FROM dead_letters FINAL")
        assert dead == [{"topic": "camera.alerts", "offset": 1,
                         "reason": "unknown camera 'CAM-NOPE' (not in the device registry)"}]
        triage = store.query("SELECT topic, reason FROM triage FINAL ORDER BY ts_ms")
        assert [t["topic"] for t in triage] == ["hotline.calls", "hotline.calls"]
        assert all(t["reason"] for t in triage)
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


def test_backtesting_a_knowledge_base_change(tmp_path, capsys):
    """An officer gives 非法小广告 ten working days instead of four working hours and replays the month."""
    kb = (REPO_ROOT / "streams" / "data" / "kb.yaml").read_text(encoding="utf-8")
    rule = "{id: small-ads, category: 非法小广告, departments: [城管执法中队], level: 3, limits: quick}"
    assert rule in kb
    changed = kb.replace(rule, "{id: small-ads, category: 非法小广告, departments: [城管执法中队], level: 3, "
                               "limits: {register: 1h work_hours, dispatch: 1h work_hours, handle: 10d work_days, "
                               "verify: 4h work_hours}}")
    path = tmp_path / "kb.yaml"
    path.write_text(changed, encoding="utf-8")
    assert cli.main(["replay", str(DATA / "replay_seeds.jsonl"), "--json", "--no-store", "--kb", str(path)]) == 0
    after = by_category([json.loads(x) for x in capsys.readouterr().out.splitlines()])
    before = by_category(run("replay_seeds.jsonl")[0])
    assert before["非法小广告"]["lights"]["handle"] == "red"
    assert after["非法小广告"]["lights"]["handle"] == "green"
    assert after["占道经营"] == before["占道经营"]  # the other categories replay the same
