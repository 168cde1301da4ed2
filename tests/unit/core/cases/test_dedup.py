"""Dedup: address normalisation, compatible categories, and the spatial index agreeing with a brute-force scan."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.cases import dedup
from streams.core.model import Signal

T0 = 1_793_581_200_000


def sig(category: str, ts: int, lat=None, lon=None, cell=None, address=None, kind="12345", extra=None) -> Signal:
    return Signal("s", "hotline", kind, "src", ts, ts, "X", category, 0.9, [], lat, lon, cell, None, None, None,
                  None, address, extra=extra)


def doc(case_id: str, category: str, opened: int, places: list[dict], open_: bool = True, devices=()) -> dict:
    return {"case_id": case_id, "category_name": category, "opened_ms": opened, "last_signal_ms": opened,
            "open": open_, "places": places, "devices": list(devices)}


def test_normalise_address():
    assert dedup.normalise_address("上海市徐汇区 钦江路１５号") == "钦江路15号"
    assert dedup.normalise_address("漕溪北路 88 号") == dedup.normalise_address("漕溪北路88号")
    assert dedup.normalise_address("  ") is None and dedup.normalise_address(None) is None


RULES = dedup.MergeRules(
    default=dedup.MergeRule(80.0, dedup.DAY_MS),
    by_category={"群租": dedup.MergeRule(30.0, 30 * dedup.DAY_MS),
                 "占道经营": dedup.MergeRule(100.0, 12 * dedup.HOUR_MS),
                 "暴露垃圾": dedup.MergeRule(50.0, 6 * dedup.HOUR_MS)},
    groups=(frozenset({"占道经营", "无照经营", "跨门经营"}), frozenset({"井盖缺失", "井盖破损"})))


def test_compatible_categories():
    assert RULES.compatible("占道经营", "无照经营")
    assert RULES.compatible("群租", "群租")
    assert not RULES.compatible("群租", "暴露垃圾")
    assert RULES.group_of("无照经营") == RULES.group_of("跨门经营") != RULES.group_of("井盖缺失")
    assert not dedup.NO_RULES.compatible("占道经营", "无照经营")  # without a KB section: same category only


def test_rules_fall_back_to_the_default():
    assert RULES.rule_for("群租").window_ms == 30 * dedup.DAY_MS
    assert RULES.rule_for("路灯损坏") == RULES.default


def test_haversine_scale():
    # 0.001° of latitude ≈ 111 m
    assert 110 < dedup.haversine_m(31.0, 121.0, 31.001, 121.0) < 112


def test_same_cell_matches_without_coordinates():
    d = doc("c1", "暴露垃圾", T0, [{"lat": None, "lon": None, "cell": "89309b96ebbffff", "address_key": None}])
    index = dedup.DedupIndex()
    index.rebuild({"c1": d})
    assert index.find(sig("暴露垃圾", T0 + 60_000, cell="89309b96ebbffff"), {"c1": d}) == "c1"
    assert index.find(sig("暴露垃圾", T0 + 60_000, cell="89309b96ebcffff"), {"c1": d}) is None


def test_closed_cases_leave_the_index():
    d = doc("c1", "群租", T0, [dedup.place_of(sig("群租", T0, address="钦江路15号"))])
    index = dedup.DedupIndex()
    index.update("c1", d)
    assert index.candidates(sig("群租", T0, address="钦江路15号")) == {"c1"}
    index.update("c1", {**d, "open": False})
    assert index.candidates(sig("群租", T0, address="钦江路15号")) == set()
    assert not index.by_address and not index.keys


def test_signal_before_the_case_within_the_window_still_matches():
    d = doc("c1", "占道经营", T0, [{"lat": 31.2, "lon": 121.44, "cell": None, "address_key": None}])
    assert dedup.matches(sig("占道经营", T0 - 3_600_000, lat=31.2, lon=121.44), d, rules=RULES)
    assert not dedup.matches(sig("占道经营", T0 - 2 * 86_400_000, lat=31.2, lon=121.44), d, rules=RULES)


def test_the_rules_decide_radius_window_and_compatibility():
    d = doc("c1", "占道经营", T0, [{"lat": 31.2, "lon": 121.44, "cell": None, "address_key": None}])
    near_later = sig("无照经营", T0 + 20 * 3_600_000, lat=31.2005, lon=121.44)   # ~56 m, 20 h later
    assert not dedup.matches(near_later, d, rules=RULES)                      # 12 h window
    wider = dedup.MergeRules(RULES.default, {**RULES.by_category, "占道经营": dedup.MergeRule(100.0, dedup.DAY_MS)},
                             RULES.groups)
    assert dedup.matches(near_later, d, rules=wider)
    assert not dedup.matches(near_later, d, rules=dedup.MergeRules(wider.default, wider.by_category, ()))


# --- the index finds exactly what a scan of every case finds (also with a radius wider than the
# smallest bucket: the bucket grows with the largest radius of the rules)
BIG_RULES = dedup.MergeRules(dedup.MergeRule(80.0, dedup.DAY_MS), {"暴露垃圾": dedup.MergeRule(900.0, dedup.DAY_MS)},
                             RULES.groups)

coords = st.tuples(st.floats(31.15, 31.17), st.floats(121.40, 121.42))
categories = st.sampled_from(["占道经营", "无照经营", "暴露垃圾", "群租"])
addresses = st.sampled_from([None, "钦江路15号", "钦江路 15 号", "宜山路100号"])
cells = st.sampled_from([None, "a", "b"])


@st.composite
def a_case(draw, i: int):
    lat, lon = draw(coords)
    place = {"lat": lat, "lon": lon, "cell": draw(cells), "address_key": dedup.normalise_address(draw(addresses))}
    return doc(f"c{i}", draw(categories), T0 + draw(st.integers(0, 86_400_000)), [place], draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_index_agrees_with_brute_force(data):
    n = data.draw(st.integers(0, 12))
    cases = {f"c{i}": data.draw(a_case(i)) for i in range(n)}
    lat, lon = data.draw(coords)
    s = sig(data.draw(categories), T0 + data.draw(st.integers(0, 2 * 86_400_000)), lat, lon, data.draw(cells),
            data.draw(addresses))
    rules = data.draw(st.sampled_from([RULES, BIG_RULES]))
    index = dedup.DedupIndex(rules)
    index.rebuild(cases)
    found = index.find(s, cases)
    assert index.match(s, index.candidates(s)) == found   # the engine's path: what the index kept of the cases
    brute = [cid for cid, d in cases.items() if d["open"] and dedup.matches(s, d, rules=rules)]
    if brute:
        assert found in brute
        best_gap = min(abs(s.ts_ms - cases[c]["last_signal_ms"]) for c in brute)
        assert abs(s.ts_ms - cases[found]["last_signal_ms"]) == best_gap
    else:
        assert found is None


@pytest.mark.parametrize("rules", [dedup.NO_RULES, RULES, BIG_RULES], ids=["none", "small", "big"])
def test_bucket_size_covers_every_merge_radius(rules: dedup.MergeRules):
    """3×3 buckets must hold every candidate: a bucket is at least the largest radius wide (to 45° N)."""
    narrowest_m = rules.bucket_deg * 111_320 * math.cos(math.radians(45))
    assert rules.largest_radius_m <= narrowest_m
    assert rules.bucket_deg >= dedup.BUCKET_DEG



@pytest.mark.parametrize("lat", [0.0, 31.2, 44.5, 50.0, 60.0, 70.0, -75.0])
def test_the_fine_grid_finds_every_place_within_the_radius_at_any_latitude(lat: float):
    """A place within the radius in any direction is a candidate, far north and south too (the grid looks
    further east and west there), and the match agrees with haversine_m at the edge of the radius."""
    index = dedup.DedupIndex(RULES)
    cases = {}
    for category in ("群租", "占道经营"):
        radius = RULES.rule_for(category).radius_m
        for step in range(0, 40):   # signals spread across a bucket, places all round each at the radius' edge
            lon = 121.0 + step * 0.000137
            s = sig(category, T0 + 60_000, lat, lon, None, None)
            for degrees in range(0, 360, 15):
                for share in (0.98, 1.02):
                    bearing = math.radians(degrees)
                    d_lat = share * radius * math.cos(bearing) / dedup.M_PER_DEG_LAT
                    d_lon = share * radius * math.sin(bearing) / (dedup.M_PER_DEG_LAT * math.cos(math.radians(lat)))
                    place = {"lat": lat + d_lat, "lon": lon + d_lon, "cell": None, "address_key": None}
                    cases = {"c1": doc("c1", category, T0, [place])}
                    index.rebuild(cases)
                    within = dedup.haversine_m(lat, lon, place["lat"], place["lon"]) <= radius
                    assert within == (share < 1)
                    assert ("c1" in index.candidates(s)) or not within, (category, lat, lon, degrees)
                    assert (index.match(s, index.candidates(s)) == "c1") == within == (index.find(s, cases) == "c1")
