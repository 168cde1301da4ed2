"""Locating: coordinates -> cell -> community -> street -> district; addresses via the gazetteer."""
from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.knowledge.geo import City
from streams.core.knowledge.knowledge import DATA_DIR, Knowledge
from streams.core.knowledge.taxonomy import DataError

XUHUI_STREETS = {"天平街道", "湖南街道", "斜土街道", "枫林街道", "长桥街道", "田林街道", "虹梅街道", "康健街道",
                 "徐家汇街道", "凌云街道", "龙华街道", "漕河泾街道", "华泾镇"}
DEPARTMENTS = ["区网格中心", "街道网格中心", "居民区工作站", "房管办", "城管执法中队", "市场监管所", "生态环境局",
               "公安派出所", "消防救援站", "绿化市容所", "市政养护单位", "路灯管理所", "物业公司", "街道管理办",
               "供电公司", "供水公司", "燃气公司", "通信运营商", "交警支队", "交通执法大队", "公交公司", "河道管理所",
               "救助管理站", "区建管委"]


@lru_cache(maxsize=1)
def _knowledge() -> Knowledge:
    return Knowledge.load()


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return _knowledge()


def test_sample_city(kb: Knowledge) -> None:
    assert set(kb.city.streets) == XUHUI_STREETS
    codes = [s.code for s in kb.city.streets.values()]
    assert len(set(codes)) == 13 and all(c.startswith("XH") for c in codes)
    assert kb.departments == DEPARTMENTS
    assert kb.city.communities["怡桂苑"].street == "虹梅街道"
    assert kb.city.communities["江南新村"].street == "斜土街道"
    assert kb.city.communities["乐山新村"].street == "徐家汇街道"
    # every street owns cells of the grid
    assert set(kb.city.cell_street.values()) == XUHUI_STREETS


def test_qinjiang_road_15_is_yiguiyuan(kb: Knowledge) -> None:
    loc, reason = kb.locate(None, None, "钦江路15号")
    assert reason is None
    assert (loc.community, loc.street, loc.street_code, loc.district) == ("怡桂苑", "虹梅街道", "XH07", "徐汇区")
    assert loc.context == ["compound"]
    assert h3.is_valid_cell(loc.cell) and h3.get_resolution(loc.cell) == kb.city.resolution


@pytest.mark.parametrize("address", ["上海市徐汇区虹梅街道钦江路15号3楼", "徐汇区钦江路１５号", "钦江璐15号",
                                     "  钦江路 15 号 "])
def test_address_variants(kb: Knowledge, address: str) -> None:
    loc, reason = kb.locate(None, None, address)
    assert loc is not None, reason
    assert loc.community == "怡桂苑" and loc.address == "钦江路15号"


def test_coordinates_walk_up_the_hierarchy(kb: Knowledge) -> None:
    loc, reason = kb.locate(31.1975, 121.4585, None)
    assert reason is None
    assert (loc.community, loc.street, loc.district) == ("江南新村", "斜土街道", "徐汇区")
    assert loc.cell == h3.latlng_to_cell(31.1975, 121.4585, kb.city.resolution)


def test_community_name_in_address(kb: Knowledge) -> None:
    loc, _ = kb.locate(None, None, "乐山新村5号楼")
    assert (loc.community, loc.street) == ("乐山新村", "徐家汇街道") and "compound" in loc.context


def test_street_front_address(kb: Knowledge) -> None:
    loc, _ = kb.locate(None, None, "宜山路455号")
    assert loc.context == ["street_front"]


def test_lane_number_is_a_compound(kb: Knowledge) -> None:
    loc, _ = kb.locate(None, None, "漕宝路77弄")
    assert loc is not None and "compound" in loc.context and loc.address == "漕宝路77弄"


def test_heritage_zone(kb: Knowledge) -> None:
    wukang, _ = kb.locate(None, None, "淮海中路1850号")
    assert "heritage" in wukang.context
    yongjia, _ = kb.locate(None, None, "永嘉路389号")
    assert {"heritage", "compound"} <= set(yongjia.context)
    jiangnan, _ = kb.locate(None, None, "斜土路1175弄")
    assert "heritage" not in jiangnan.context
    assert kb.city.heritage_cells < set(kb.city.cell_street)


def test_interpolated_door_number(kb: Knowledge) -> None:
    loc, reason = kb.locate(None, None, "虹梅路1500号")
    assert reason is None and loc.street in XUHUI_STREETS and loc.address == "虹梅路1500号"


def test_text_is_searched_when_no_address(kb: Knowledge) -> None:
    loc, _ = kb.locate(None, None, None, "我住在江南新村，楼上天天吵")
    assert loc.community == "江南新村"


def test_address_wins_over_coordinates(kb: Knowledge) -> None:
    loc, _ = kb.locate(31.1955, 121.4325, "钦江路15号")
    assert loc.community == "怡桂苑"


def test_bad_address_falls_back_to_coordinates(kb: Knowledge) -> None:
    loc, _ = kb.locate(31.1955, 121.4325, "不知道哪里")
    assert loc.community == "乐山新村"


@pytest.mark.parametrize("lat,lon,address,text,fragment", [
    (None, None, None, None, "no address, coordinates"),
    (31.30, 121.50, None, None, "outside 徐汇区"),
    (None, None, "南京东路1号", None, "names no known road"),
    (None, None, "钦江路", None, "without a door number"),
    (None, None, "天山路10号", None, "names no known road"),   # not 天平路: only the suffix may be a typo
    (None, None, None, "有人乱扔垃圾", "names no known address"),
])
def test_unknown_location_gives_a_reason(kb: Knowledge, lat, lon, address, text, fragment: str) -> None:
    loc, reason = kb.locate(lat, lon, address, text)
    assert loc is None and fragment in reason


# ---------------------------------------------------------------- address parser properties
prefixes = st.sampled_from(["", "上海市", "上海市徐汇区", "徐汇区", "徐汇区虹梅街道", "我家在", "就在"])
suffixes = st.sampled_from(["", "3楼", "门口", "，楼下很吵", "东侧", "5号楼"])


@given(road=st.sampled_from(sorted(_knowledge().city.roads)), number=st.integers(1, 99999),
       unit=st.sampled_from(["号", "弄"]), prefix=prefixes, suffix=suffixes, full_width=st.booleans())
@settings(max_examples=300, deadline=None)
def test_parse_address_finds_road_and_number(road: str, number: int, unit: str, prefix: str, suffix: str,
                                             full_width: bool) -> None:
    city = _knowledge().city
    digits = str(number)
    if full_width:
        digits = "".join(chr(ord(d) + 0xFEE0) for d in digits)
    parsed = city.parse_address(f"{prefix}{road}{digits}{unit}{suffix}")
    assert parsed.road == road and parsed.number == number and parsed.unit == unit
    assert parsed.key == f"{road}{number}{unit}"


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_locate_never_raises(text: str) -> None:
    loc, reason = _knowledge().locate(None, None, text, text)
    assert (loc is None) != (reason is None)
    if loc is not None:
        assert loc.street in XUHUI_STREETS and loc.street_code


# ---------------------------------------------------------------- per-street department instances (issue 15)
def test_each_street_names_its_department_instances(kb: Knowledge) -> None:
    city = kb.city
    assert city.unit_of("城管执法中队", "徐家汇街道") == "徐家汇街道城管中队"
    assert city.unit_of("房管办", "虹梅街道") == "虹梅街道房管办"          # seed 000's 虹梅街道房管办
    assert city.unit_of("公安派出所", "华泾镇") == "华泾派出所"
    assert city.unit_of("消防救援站", "天平街道") == city.unit_of("消防救援站", "湖南街道") == "衡山路消防救援站"
    assert city.unit_of("物业公司", "虹梅街道", "怡桂苑") == "怡桂苑物业"
    assert city.unit_of("物业公司", "虹梅街道", None) == "物业公司"         # no community: the kind
    assert city.unit_of("供电公司", "徐家汇街道") == "供电公司"             # district-wide
    assert city.kind_of("徐家汇街道城管中队") == "城管执法中队" and city.kind_of("城管执法中队") == "城管执法中队"
    assert city.kind_of("火星城管中队") is None
    street_kinds = [d for d in city.departments.values() if d.scope == "street"]
    assert len({city.unit_of(d.name, s) for d in street_kinds for s in city.streets}) >= 13 * len(street_kinds) - 2


def _city_error(tmp_path: Path, old: str, new: str) -> DataError:
    city_dir = tmp_path / "city"
    shutil.copytree(DATA_DIR / "city", city_dir)
    text = (city_dir / "city.yaml").read_text(encoding="utf-8")
    assert old in text, old
    (city_dir / "city.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(DataError) as info:
        City.load(city_dir / "city.yaml")
    return info.value


def _line(path: str, number: int) -> str:
    return Path(path).read_text(encoding="utf-8").splitlines()[number - 1]


@pytest.mark.parametrize("old,new,field,problem,on_line", [
    ('{name: 市政养护单位, scope: district, role: 市政道路与排水设施养护单位}',
     '{name: 市政养护单位, scope: district, role: 市政道路与排水设施养护单位, instance: "{street}养护"}',
     "instance", "district-wide department has no instances", "市政养护单位"),
    ('instance: "{street}城管中队"', 'instance: "{district}城管中队"', "instance", "use {street}, {street_short}",
     "城管执法中队"),
    ('departments: {消防救援站: 枫林消防救援站}', 'departments: {消防站: 枫林消防救援站}',
     "streets[2].departments.消防站",
     "not a street-scoped department", "斜土街道"),
    ('departments: {消防救援站: 枫林消防救援站}', 'departments: {消防救援站: 徐家汇派出所}',
     "streets[2].departments.消防救援站",
     "already belongs to 公安派出所", "斜土街道"),
    ('departments: {消防救援站: 枫林消防救援站}', 'departments: {消防救援站: 房管办}',
     "streets[2].departments.消防救援站",
     "is a department kind's name", "斜土街道"),
])
def test_instance_errors_name_the_line(tmp_path: Path, old: str, new: str, field: str, problem: str,
                                       on_line: str) -> None:
    err = _city_error(tmp_path, old, new)
    assert err.field.endswith(field) and problem in err.problem
    assert on_line in _line(err.path, err.line)
