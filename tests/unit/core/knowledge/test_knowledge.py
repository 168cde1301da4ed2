"""Every routing rule of the sample city's 责任清单 (issue 3), through the core API."""
from __future__ import annotations

import pytest

from streams.core.cases.dedup import MergeRule
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import CTX_COMPOUND, CTX_DECIBEL, CTX_STALL, CTX_STREET_FRONT

CLOCKS = {"emergency_hours", "work_hours", "work_days", "calendar_days"}


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


# (category, context, expected departments in order, expected level or None)
RULES = [
    ("噪声扰民", [CTX_COMPOUND], ["物业公司"], 4),
    ("噪声扰民", [CTX_STREET_FRONT], ["市场监管所"], 3),
    ("噪声扰民", [CTX_STALL], ["城管执法中队"], 3),
    ("群租", [], ["房管办"], None),
    ("私装地锁", [], ["居民区工作站"], 4),
    ("损坏房屋承重结构", [], ["物业公司", "房管办"], None),
    ("餐饮油烟", [], ["城管执法中队"], None),
    ("违法搭建", [], ["城管执法中队"], None),
    ("跨门经营", [], ["城管执法中队"], None),
    ("占道经营", [], ["城管执法中队"], None),
    ("无照经营", [], ["城管执法中队"], None),
    ("非法小广告", [], ["城管执法中队"], None),
    ("施工扰民", [], ["城管执法中队"], None),
    ("工地扬尘", [], ["城管执法中队"], None),
    ("人身安全险情", [], ["公安派出所", "消防救援站"], None),
    ("历史建筑振动超限", [], ["街道管理办", "房管办"], None),
    ("历史建筑倾斜超限", [], ["街道管理办", "房管办"], None),
    ("历史建筑擅自装修", [], ["街道管理办", "房管办"], None),
    ("电动车进电梯", [], ["物业公司"], None),
    ("飞线充电", [], ["物业公司"], None),
    ("人群聚集超限", [], ["公安派出所"], None),
    ("机动车乱停放", [], ["公安派出所"], None),
    ("暴露垃圾", [], ["绿化市容所"], None),
    ("绿化损坏", [], ["绿化市容所"], None),
    ("非机动车乱停放", [], ["绿化市容所"], None),
    ("违规户外广告", [], ["绿化市容所"], None),
    ("井盖缺失", [], ["市政养护单位"], None),
    ("井盖破损", [], ["市政养护单位"], None),
    ("道路破损", [], ["市政养护单位"], None),
    ("道路积水", [], ["市政养护单位"], None),
    ("路灯损坏", [], ["路灯管理所"], None),
    ("消防设施损坏", [], ["消防救援站"], None),
]


@pytest.mark.parametrize("name,context,departments,level", RULES,
                         ids=[f"{r[0]}-{'+'.join(r[1]) or 'default'}" for r in RULES])
def test_routing_rule(kb: Knowledge, name: str, context: list[str], departments: list[str], level: int | None) -> None:
    category = kb.category(name)
    assert category is not None, name
    route = kb.route(category.code, context)
    assert route.departments == departments
    if level is not None:
        assert route.level == level
    assert route.kb_version == kb.version
    assert set(route.departments) <= set(kb.departments)
    assert {"register", "dispatch", "handle", "verify"} <= set(route.stage_limits)
    for clock, minutes in route.stage_limits.values():
        assert clock in CLOCKS and minutes > 0


def test_route_accepts_chinese_name_and_code_alike(kb: Knowledge) -> None:
    assert kb.route("群租", []).rule_id == kb.route(kb.category("群租").code, []).rule_id


@pytest.mark.parametrize("context", [[CTX_COMPOUND], [CTX_STREET_FRONT], [CTX_STALL], []])
def test_noise_decibel_measurement_adds_ecology_bureau(kb: Knowledge, context: list[str]) -> None:
    without = kb.route("噪声扰民", context)
    with_db = kb.route("噪声扰民", context + [CTX_DECIBEL])
    assert "生态环境局" not in without.departments
    assert with_db.departments == without.departments + ["生态环境局"]
    assert with_db.departments[0] == without.departments[0]  # a co-handler, never the primary


def test_noise_stall_wins_over_street_front(kb: Knowledge) -> None:
    assert kb.route("噪声扰民", [CTX_STREET_FRONT, CTX_STALL]).departments[0] == "城管执法中队"


def test_noise_context_from_location(kb: Knowledge) -> None:
    compound, _ = kb.locate(None, None, "钦江路15号")
    shop, _ = kb.locate(None, None, "宜山路455号")
    assert kb.route("噪声扰民", [], compound).departments == ["物业公司"]
    assert kb.route("噪声扰民", [], shop).departments == ["市场监管所"]


def test_load_bearing_wall_is_immediate_with_housing_office(kb: Knowledge) -> None:
    route = kb.route("损坏房屋承重结构", [])
    assert route.immediate and route.departments[0] == "物业公司" and "房管办" in route.departments
    assert route.escalate_on_red


def test_group_rent_from_committee_is_immediate(kb: Knowledge) -> None:
    assert kb.route("群租", ["committee"]).immediate
    assert not kb.route("群租", []).immediate
    assert kb.route("群租", ["committee"]).departments == ["房管办"]


def test_personal_danger_runs_on_the_emergency_clock(kb: Knowledge) -> None:
    route = kb.route("人身安全险情", [])
    assert {clock for clock, _ in route.stage_limits.values()} == {"emergency_hours"}
    assert route.immediate


def test_parking_lock_is_a_level_4_community_case(kb: Knowledge) -> None:
    route = kb.route("私装地锁", [])
    assert route.level == 4
    assert route.stage_limits["handle"] == ("calendar_days", 7 * 1440)


@pytest.mark.parametrize("name,address,owner,component", [
    ("井盖缺失", "钦江路15号", "物业公司", "MH-QJ-0015"),
    ("井盖破损", "宜山路455号", "路灯管理所", "MH-YS-0455"),
    ("道路破损", "斜土路1175弄", "物业公司", "RD-XT-1175"),
    ("道路积水", "乐山路33弄", "物业公司", "DR-LS-0033"),
])
def test_component_owner_from_registry(kb: Knowledge, name: str, address: str, owner: str, component: str) -> None:
    location, reason = kb.locate(None, None, address)
    assert location is not None, reason
    route = kb.route(name, [], location)
    assert route.departments[0] == owner
    assert route.rule_id.endswith(f"owner:{component}")


def test_component_owner_found_by_coordinates(kb: Knowledge) -> None:
    location, _ = kb.locate(31.17251, 121.40621, None)
    assert kb.route("井盖缺失", [], location).departments[0] == "物业公司"


def test_component_owner_unknown_falls_back_to_maintenance(kb: Knowledge) -> None:
    location, _ = kb.locate(None, None, "漕宝路300号")
    route = kb.route("井盖缺失", [], location)
    assert route.departments == ["市政养护单位"] and "owner" not in route.rule_id


def test_every_category_has_a_route(kb: Knowledge) -> None:
    for category in kb.taxonomy:
        route = kb.route(category.code, [])
        assert route.departments and route.level in (1, 2, 3, 4)


def test_unknown_category_raises(kb: Knowledge) -> None:
    with pytest.raises(KeyError):
        kb.route("E9999", [])


def test_illegal_building_in_heritage_zone_adds_street_management(kb: Knowledge) -> None:
    zone, _ = kb.locate(None, None, "永嘉路389号")
    outside, _ = kb.locate(None, None, "钦江路15号")
    assert kb.route("违法搭建", [], zone).departments == ["城管执法中队", "街道管理办"]
    assert kb.route("违法搭建", [], outside).departments == ["城管执法中队"]


# ---------------------------------------------------------------- the larger taxonomy (issue 15)
def test_every_category_has_a_route_with_limits_on_named_clocks(kb: Knowledge) -> None:
    """Each of the 100+ categories: departments from the directory, a level, and every stage limit
    on one of the four named clocks."""
    assert len(kb.taxonomy) >= 100
    for category in kb.taxonomy:
        route = kb.route(category.code, [])
        assert route.departments and set(route.departments) <= set(kb.departments), category.name
        assert route.level in (1, 2, 3, 4)
        assert {"register", "dispatch", "handle", "verify"} <= set(route.stage_limits), category.name
        for clock, minutes in route.stage_limits.values():
            assert clock in CLOCKS and minutes > 0


def test_emergencies_run_on_the_continuous_clock(kb: Knowledge) -> None:
    for category in kb.taxonomy:
        if category.urgency == "emergency":
            route = kb.route(category.code, [])
            assert route.stage_limits["handle"][0] == "emergency_hours", category.name
            assert route.immediate, category.name


@pytest.mark.parametrize("name,context,departments,level", [
    ("燃气泄漏", [], ["燃气公司", "消防救援站"], 2),
    ("自来水管爆裂", [], ["供水公司"], 2),
    ("交通信号灯故障", [], ["交警支队"], 2),
    ("健身器材损坏", [CTX_COMPOUND], ["物业公司"], 4),
    ("健身器材损坏", [], ["街道管理办"], 3),
    ("宠物粪便", [CTX_COMPOUND], ["物业公司"], 4),
    ("宠物粪便", [], ["绿化市容所"], 3),
    ("电梯故障", [], ["物业公司", "市场监管所"], 3),
    ("流浪乞讨", [], ["救助管理站", "公安派出所"], 3),
    ("居改非", [], ["房管办", "城管执法中队"], 3),
])
def test_new_category_routes(kb: Knowledge, name: str, context: list[str], departments: list[str], level: int) -> None:
    route = kb.route(name, context)
    assert route.departments == departments and route.level == level


def test_new_limit_profiles(kb: Knowledge) -> None:
    assert kb.route("道路不洁", []).stage_limits["handle"] == ("work_hours", 2 * 60)       # 2 工作时
    assert kb.route("交通标志牌损坏", []).stage_limits["handle"] == ("work_days", 5 * 1440)  # 5 工作日
    assert kb.route("居改非", []).stage_limits["handle"] == ("work_days", 15 * 1440)        # 15 工作日
    assert kb.route("突发停水", []).stage_limits["handle"] == ("emergency_hours", 12 * 60)


# ---------------------------------------------------------------- dedup rules from the KB
def test_merge_rules_come_from_the_kb(kb: Knowledge) -> None:
    rules = kb.merge_rules
    assert rules.rule_for("群租") == MergeRule(30.0, 30 * 86_400_000)
    assert rules.rule_for("暴露垃圾") == MergeRule(50.0, 6 * 3_600_000)
    assert rules.rule_for("路灯损坏") == rules.default == MergeRule(80.0, 86_400_000)
    assert rules.compatible("占道经营", "无照经营") and rules.compatible("自来水管爆裂", "突发停水")
    assert not rules.compatible("占道经营", "暴露垃圾")
    assert rules.bucket_deg * 111_320 * 0.7071 >= rules.largest_radius_m   # 300 m outage radius fits


def test_an_officer_edits_the_merge_rules(tmp_path) -> None:
    """A KB copy with a 10-day window for 暴露垃圾 and 路灯损坏 compatible with 突发停电 changes what merges."""
    from streams.core.cases.engine import CaseEngine
    from streams.core.knowledge.knowledge import DATA_DIR
    from streams.core.model import Signal

    text = (DATA_DIR / "kb.yaml").read_text(encoding="utf-8")
    text = text.replace("    暴露垃圾: {radius: 50m, window: 6h}", "    暴露垃圾: {radius: 50m, window: 10d}")
    text = text.replace("    - [破墙开店, 居改非]", "    - [破墙开店, 居改非]\n    - [路灯损坏, 突发停电]")
    path = tmp_path / "kb.yaml"
    path.write_text(text, encoding="utf-8")
    edited = Knowledge.load(kb_path=path)
    original = Knowledge.load()

    def signal(k: Knowledge, n: int, name: str, ts_ms: int) -> Signal:
        location, _ = k.locate(None, None, "宜山路455号")
        category = k.category(name)
        return Signal(f"s{n}", "hotline", "12345", f"c{n}", ts_ms, ts_ms, category.code, category.name, 0.9, [],
                      location.lat, location.lon, location.cell, location.community, location.street,
                      location.street_code, location.district, location.address)

    t0 = 1_793_581_200_000
    merged = {}
    for label, k in (("original", original), ("edited", edited)):
        engine = CaseEngine(k, {}, {})
        engine.on_signal(signal(k, 1, "暴露垃圾", t0))
        later = engine.on_signal(signal(k, 2, "暴露垃圾", t0 + 2 * 86_400_000)).merged
        engine.on_signal(signal(k, 3, "路灯损坏", t0))
        outage = engine.on_signal(signal(k, 4, "突发停电", t0 + 3_600_000)).merged
        merged[label] = (later, outage)
    assert merged == {"original": (0, 0), "edited": (1, 1)}


# ---------------------------------------------------------------- per-street instances in routes
@pytest.mark.parametrize("name,address,departments,units", [
    ("群租", "钦江路15号", ["房管办"], ["虹梅街道房管办"]),
    ("噪声扰民", "钦江路15号", ["物业公司"], ["怡桂苑物业"]),                 # a compound: its property company
    ("噪声扰民", "宜山路455号", ["市场监管所"], ["徐家汇市场监管所"]),
    ("占道经营", "斜土路1221号", ["城管执法中队"], ["斜土街道城管中队"]),
    ("人身安全险情", "永嘉路389号", ["公安派出所", "消防救援站"], ["天平派出所", "衡山路消防救援站"]),
    ("井盖缺失", "漕宝路300号", ["市政养护单位"], ["市政养护单位"]),            # district-wide: no instance
])
def test_routes_pick_the_instance_by_location(kb: Knowledge, name: str, address: str, departments: list[str],
                                              units: list[str]) -> None:
    location, reason = kb.locate(None, None, address)
    assert location is not None, reason
    route = kb.route(name, [], location)
    assert route.departments == departments and route.units == units


def test_without_a_location_the_units_are_the_kinds(kb: Knowledge) -> None:
    route = kb.route("损坏房屋承重结构", [])
    assert route.units == route.departments == ["物业公司", "房管办"]


def test_departments_of_accepts_kinds_and_instances(kb: Knowledge) -> None:
    kinds, units = kb.departments_of(["徐家汇街道城管中队", "房管办", "供电公司"], "虹梅街道", None)
    assert kinds == ["城管执法中队", "房管办", "供电公司"]
    assert units == ["徐家汇街道城管中队", "虹梅街道房管办", "供电公司"]
