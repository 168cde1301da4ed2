"""Data files are checked at load: errors name the file, the line and the field."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streams.core.knowledge.knowledge import DATA_DIR, Knowledge
from streams.core.knowledge.taxonomy import DataError, Taxonomy


def _kb_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = (DATA_DIR / "kb.yaml").read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "kb.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _load_error(kb_path: Path | None = None, city_dir: Path | None = None) -> DataError:
    with pytest.raises(DataError) as info:
        Knowledge.load(kb_path=kb_path, city_dir=city_dir)
    return info.value


def _line(path: Path, number: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[number - 1]


def test_packaged_knowledge_loads() -> None:
    kb = Knowledge.load()
    assert kb.version == "xuhui-kb-2026.11.1"
    assert len(kb.taxonomy) >= 30


def test_unknown_department_names_file_line_field(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "  - id: group-rent\n    category: 群租\n    departments: [房管办]",
                    "  - id: group-rent\n    category: 群租\n    departments: [房屋管理局]")
    err = _load_error(kb_path=path)
    assert err.path == str(path)
    assert "房屋管理局" in _line(path, err.line)
    assert err.field == "rules[5].departments[0]"
    assert "unknown department" in str(err) and str(path) in str(err) and f":{err.line}:" in str(err)


def test_unknown_category(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "category: 私装地锁", "category: 私装地所")
    err = _load_error(kb_path=path)
    assert "私装地所" in _line(path, err.line) and err.field.endswith(".category")
    assert "unknown category" in err.problem


def test_bad_limit_amount(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "handle: 3d work_days", "handle: three days")
    err = _load_error(kb_path=path)
    assert err.field == "limits.standard.handle"
    assert "three days" in _line(path, err.line)


def test_unknown_clock(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "handle: 2h emergency_hours", "handle: 2h lunar_hours")
    err = _load_error(kb_path=path)
    assert "unknown clock 'lunar_hours'" in err.problem
    assert "lunar_hours" in _line(path, err.line)


def test_level_out_of_range_reported_by_pydantic_with_line(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "departments: [居民区工作站]\n    level: 4", "departments: [居民区工作站]\n    level: 5")
    err = _load_error(kb_path=path)
    assert err.field.endswith(".level")
    assert "level: 5" in _line(path, err.line)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    immediate: true\n    escalate_on_red: true\n  - id: parking-lock",
                    "    immediate: true\n    escalate_on_red: true\n    urgent_please: true\n  - id: parking-lock")
    err = _load_error(kb_path=path)
    assert err.field.endswith("urgent_please")
    assert "urgent_please" in _line(path, err.line)


def test_unknown_context_flag(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "when: [stall]", "when: [market]")
    err = _load_error(kb_path=path)
    assert err.field == "rules[0].when[0]" and "market" in _line(path, err.line)


def test_category_without_default_rule(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "  - id: noise-default\n    category: 噪声扰民\n    departments: [街道网格中心]",
                    "  - id: noise-default\n    category: 噪声扰民\n    when: [heritage]\n"
                    "    departments: [街道网格中心]")
    err = _load_error(kb_path=path)
    assert "噪声扰民" in err.problem and "no default rule" in err.problem
    assert _line(path, err.line) == "  - id: noise-stall"  # the category's first rule


def test_duplicate_key(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "ebike_repeat_per_day: 3", "ebike_repeat_per_day: 3\nebike_repeat_per_day: 4")
    err = _load_error(kb_path=path)
    assert "duplicate key" in err.problem and _line(path, err.line).startswith("ebike_repeat_per_day: 4")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "version: \"xuhui-kb-2026.11.1\"", "version: [unclosed")
    err = _load_error(kb_path=path)
    assert err.field == "(syntax)" and err.line is not None


def test_crowd_thresholds_must_increase(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "武康路: [300, 600, 1200]", "武康路: [300, 200, 1200]")
    err = _load_error(kb_path=path)
    assert err.field == "crowd_levels.areas.武康路" and "武康路" in _line(path, err.line)


def test_missing_file() -> None:
    err = _load_error(kb_path=Path("/nonexistent/kb.yaml"))
    assert "cannot read" in err.problem


def _city_copy(tmp_path: Path, old: str, new: str, name: str = "city.yaml") -> Path:
    city_dir = tmp_path / "city"
    shutil.copytree(DATA_DIR / "city", city_dir)
    text = (city_dir / name).read_text(encoding="utf-8")
    assert old in text, old
    (city_dir / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    return city_dir


def test_city_community_in_unknown_street(tmp_path: Path) -> None:
    city_dir = _city_copy(tmp_path, "{name: 怡桂苑, street: 虹梅街道", "{name: 怡桂苑, street: 虹桥街道")
    err = _load_error(city_dir=city_dir)
    assert err.path.endswith("city.yaml") and err.field == "communities[0].street"
    assert "怡桂苑" in _line(Path(err.path), err.line)


def test_component_owner_must_be_a_department(tmp_path: Path) -> None:
    city_dir = _city_copy(tmp_path, "owner: 路灯管理所", "owner: 上海电信")
    err = _load_error(city_dir=city_dir)
    assert err.field == "components[1].owner" and "上海电信" in _line(Path(err.path), err.line)


def test_device_with_unknown_protection_class(tmp_path: Path) -> None:
    city_dir = _city_copy(tmp_path, "protection_class: 一类, metrics", "protection_class: 五类, metrics",
                          "devices.yaml")
    err = _load_error(city_dir=city_dir)
    assert err.path.endswith("devices.yaml") and err.field.endswith("protection_class")
    assert "五类" in _line(Path(err.path), err.line)


def test_device_outside_the_district(tmp_path: Path) -> None:
    city_dir = _city_copy(tmp_path, "address: 钦江路15号, at: [31.1725, 121.4062]}\n  - {id: LIFT-JN",
                          "address: 南京东路1号, at: [31.2400, 121.4900]}\n  - {id: LIFT-JN", "devices.yaml")
    err = _load_error(city_dir=city_dir)
    assert err.field == "lifts[0].address" and "outside" in err.problem


def test_taxonomy_bad_code(tmp_path: Path) -> None:
    text = (DATA_DIR / "taxonomy.yaml").read_text(encoding="utf-8").replace("code: E0601", "code: X601")
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        Taxonomy.load(path)
    assert info.value.field.endswith(".code") and "X601" in _line(path, info.value.line)


def test_corpus_line_with_unknown_category(tmp_path: Path) -> None:
    city_dir = tmp_path / "city"
    shutil.copytree(DATA_DIR / "city", city_dir)
    shutil.copytree(DATA_DIR / "corpus", city_dir / "corpus")
    with (city_dir / "corpus" / "E0601.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"text": "有人乱扔烟头", "category": "乱扔烟头"}\n')
    err = _load_error(city_dir=city_dir)
    assert err.path.endswith("E0601.jsonl") and err.field == "category" and err.line > 30


def test_gazetteer_address_on_an_unknown_road(tmp_path: Path) -> None:
    city_dir = _city_copy(tmp_path, "{address: 高安路18弄,", "{address: 建国西路18弄,")
    err = _load_error(city_dir=city_dir)
    assert err.field.startswith("addresses[") and "建国西路18弄" in _line(Path(err.path), err.line)


# ---------------------------------------------------------------- dedup rules (the KB's `merge` section)
def test_merge_rule_with_an_unknown_category(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    群租: {radius: 30m, window: 30d}", "    群住: {radius: 30m, window: 30d}")
    err = _load_error(kb_path=path)
    assert err.field == "merge.rules.群住" and "unknown category '群住'" in err.problem
    assert "群住" in _line(path, err.line)


def test_merge_radius_and_window_formats(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    暴露垃圾: {radius: 50m, window: 6h}",
                    "    暴露垃圾: {radius: 50 metres, window: 6h}")
    err = _load_error(kb_path=path)
    assert err.field == "merge.rules.暴露垃圾.radius" and "50 metres" in err.problem
    assert "暴露垃圾" in _line(path, err.line)
    path = _kb_copy(tmp_path, "    暴露垃圾: {radius: 50m, window: 6h}", "    暴露垃圾: {radius: 50m, window: 6 hours}")
    err = _load_error(kb_path=path)
    assert err.field == "merge.rules.暴露垃圾.window" and "暴露垃圾" in _line(path, err.line)


def test_merge_radius_is_bounded(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    道路结冰: {radius: 300m, window: 12h}", "    道路结冰: {radius: 3km, window: 12h}")
    err = _load_error(kb_path=path)
    assert "3000 m is outside" in err.problem and "道路结冰" in _line(path, err.line)


def test_a_category_in_two_compatible_groups(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    - [施工占道, 无证掘路]", "    - [施工占道, 无证掘路, 无照经营]")
    err = _load_error(kb_path=path)
    assert "无照经营 is already in compatible group 0" in err.problem
    assert err.field == "merge.compatible[5][2]" and "无照经营" in _line(path, err.line)


def test_a_compatible_group_of_one(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "    - [井盖缺失, 井盖破损]", "    - [井盖缺失, B0101]")
    err = _load_error(kb_path=path)
    assert "at least two different categories" in err.problem and "井盖缺失" in _line(path, err.line)


def test_merge_section_is_strict(tmp_path: Path) -> None:
    path = _kb_copy(tmp_path, "  default: {radius: 80m, window: 1d}", "  default: {radius: 80m, window: 1d, speed: 3}")
    err = _load_error(kb_path=path)
    assert err.field == "merge.default.speed" and "speed" in _line(path, err.line)
