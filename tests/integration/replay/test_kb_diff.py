"""``streams replay FILE --kb NEW --diff``: the officer's check of a KB change against recorded history,
with the real knowledge base, ingest and engine (no store)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from streams import cli
from streams.core.knowledge.knowledge import Knowledge
from streams.kbdiff import diff_cases, format_diff, limit_text, replay_diff
from streams.settings import Settings
from tests.paths import REPO_ROOT, TEST_DATA

KB = REPO_ROOT / "streams" / "data" / "kb.yaml"
SEEDS = TEST_DATA / "replay_seeds.jsonl"
SMALL_ADS = "{id: small-ads, category: 非法小广告, departments: [城管执法中队], level: 3, limits: quick}"


def kb_copy(tmp_path: Path, *edits: tuple[str, str], name: str = "kb-new.yaml") -> Path:
    text = KB.read_text(encoding="utf-8").replace('version: "xuhui-kb-2026.11.1"', 'version: "xuhui-kb-next"')
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def diff_of(tmp_path: Path, lines: list[str], *edits: tuple[str, str]):
    new = Knowledge.load(kb_path=kb_copy(tmp_path, *edits))
    return replay_diff(lines, Settings(), Knowledge.load(), new, err=io.StringIO())


def seeds() -> list[str]:
    return SEEDS.read_text(encoding="utf-8").splitlines()


def test_limit_text_round_trips_the_kb_notation():
    assert limit_text("work_days", 3 * 1440) == "3d work_days"
    assert limit_text("work_hours", 90) == "90m work_hours"
    assert limit_text("emergency_hours", 120) == "2h emergency_hours"


def test_the_same_kb_changes_nothing(tmp_path):
    diff = diff_of(tmp_path, seeds())
    assert diff.cases_before == diff.cases_after == 5
    assert diff.changed == [] and diff.only_before == [] and diff.only_after == []
    assert diff.new_version == "xuhui-kb-next" and diff.base_version == "xuhui-kb-2026.11.1"


def test_longer_limits_turn_a_red_light_green(tmp_path):
    longer = SMALL_ADS.replace("limits: quick", "limits: {register: 1h work_hours, dispatch: 1h work_hours, "
                                                "handle: 10d work_days, verify: 4h work_hours}")
    diff = diff_of(tmp_path, seeds(), (SMALL_ADS, longer))
    [change] = diff.changed
    assert change.rule == "small-ads" and set(change.changes) == {"deadlines", "lights"}
    before, after = change.changes["lights"]
    assert before["handle"] == "red" and after["handle"] == "green"
    limits_before, limits_after = change.changes["deadlines"]
    assert limits_before["handle"] == "4h work_hours" and limits_after["handle"] == "10d work_days"
    assert diff.by_rule() == {"small-ads": 1} and diff.by_field() == {"deadlines": 1, "lights": 1}


def test_new_departments_and_level_counted_by_rule(tmp_path):
    diff = diff_of(tmp_path, seeds(),
                   ("    departments: [居民区工作站]\n    level: 4\n    limits: community",
                    "    departments: [城管执法中队, 居民区工作站]\n    level: 3\n    limits: community"))
    [change] = diff.changed
    assert change.rule == "parking-lock"
    assert change.changes["departments"] == (["居民区工作站"], ["城管执法中队", "居民区工作站"])
    assert change.changes["level"] == (4, 3)
    text = format_diff(diff)
    assert "1 would change" in text and "parking-lock" in text and '["城管执法中队", "居民区工作站"]' in text


def test_a_narrower_merge_window_splits_a_case(tmp_path):
    """占道经营 reported by 12345, a camera and an inspector within 20 minutes: one case; with a
    one-minute window the later reports open cases of their own."""
    diff = diff_of(tmp_path, seeds(), ("    占道经营: {radius: 100m, window: 12h}",
                                       "    占道经营: {radius: 100m, window: 1m}"))
    assert diff.cases_after == diff.cases_before + 2
    assert [c["category"] for c in diff.only_after] == ["E0502 占道经营", "E0502 占道经营"]
    assert diff.only_before == []


def test_a_camera_type_mapped_to_another_category_changes_the_category_and_rule(tmp_path):
    lines = [json.dumps({"topic": "camera.alerts", "value": {
        "alert_id": f"CAM-XH-004-{i}", "camera_id": "CAM-XH-004", "ts": f"2026-11-0{i}T10:00:00+08:00",
        "type": "street_vending", "confidence": 0.95, "count": 1, "snapshot": None}}) for i in (2, 5)]
    diff = diff_of(tmp_path, lines, ("street_vending: {category: 占道经营, min_confidence: 0.75}",
                                     "street_vending: {category: 无照经营, min_confidence: 0.75}"))
    assert len(diff.changed) == 2
    assert {c.rule for c in diff.changed} == {"road-trading -> unlicensed"}
    change = diff.changed[0]
    assert change.changes["category"] == ("E0502 占道经营", "E0503 无照经营")
    assert change.changes["deadlines"][1]["handle"] == "3d work_days"


def test_diff_cases_lists_cases_of_one_side_only():
    doc = {"case_id": "c1", "opened_ms": 0, "category_code": "E0601", "category_name": "群租",
           "departments": ["房管办"], "level": 3, "stage_limits": {"handle": ["work_days", 7200]}, "open": False,
           "stages": {}, "lights": {}, "reporters": 1, "sources": [], "stage": "closed", "rule_id": "group-rent"}
    diff = diff_cases({"c1": doc}, {"c2": {**doc, "case_id": "c2"}})
    assert [c["case_id"] for c in diff.only_before] == ["c1"] and [c["case_id"] for c in diff.only_after] == ["c2"]
    assert diff.only_before[0]["deadlines"] == {"handle": "5d work_days"}


def test_cli_diff_text_and_json(tmp_path, capsys):
    path = kb_copy(tmp_path, (SMALL_ADS, SMALL_ADS.replace("[城管执法中队]", "[城管执法中队, 绿化市容所]")))
    assert cli.main(["replay", str(SEEDS), "--kb", str(path), "--diff"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("KB diff xuhui-kb-2026.11.1 -> xuhui-kb-next: 5 cases before, 5 after; 1 would change")
    assert "small-ads" in out and "绿化市容所" in out
    assert cli.main(["replay", str(SEEDS), "--kb", str(path), "--diff", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] == 1 and report["by_rule"] == {"small-ads": 1} and report["by_field"] == {"departments": 1}
    assert report["examples"][0]["changes"]["departments"]["after"] == ["城管执法中队", "绿化市容所"]


def test_cli_diff_needs_a_new_kb_and_reports_a_broken_one(tmp_path, capsys):
    assert cli.main(["replay", str(SEEDS), "--diff"]) == 2
    assert "--diff needs --kb" in capsys.readouterr().err
    broken = kb_copy(tmp_path, ("category: 私装地锁", "category: 私装地所"))
    assert cli.main(["replay", str(SEEDS), "--kb", str(broken), "--diff"]) == 2
    err = capsys.readouterr().err
    assert "knowledge base not usable" in err and "私装地所" in err


@pytest.mark.parametrize("flag", ["--base-kb"])
def test_base_kb_can_be_given(tmp_path, capsys, flag):
    old = kb_copy(tmp_path, name="kb-old.yaml")
    new = kb_copy(tmp_path, ("    暴露垃圾: {radius: 50m, window: 6h}", "    暴露垃圾: {radius: 50m, window: 10d}"))
    assert cli.main(["replay", str(SEEDS), "--kb", str(new), flag, str(old), "--diff"]) == 0
    assert "xuhui-kb-next -> xuhui-kb-next: 5 cases before, 5 after; 0 would change" in capsys.readouterr().out
