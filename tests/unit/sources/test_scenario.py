"""The simulated city day: places over the whole district, diurnal pattern, bursts, one problem from
several sources, malformed records; deterministic for a seed. Checked against the real locator, codec,
ingest and case engine (no Kafka)."""
from __future__ import annotations

import collections
from datetime import datetime

import pytest

from streams.bus.codec import DecodeError, registry
from streams.bus.topics import RAW_SCHEMAS
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.core.times import CITY_TZ
from streams.sources.scenario import (
    Burst,
    CityScenario,
    ScenarioConfig,
    SimRecord,
    district_places,
    local_hour,
    scenario_for,
)

DAY_START = int(datetime(2026, 11, 20, tzinfo=CITY_TZ).timestamp() * 1000)
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return Knowledge.load()


@pytest.fixture(scope="module")
def day(knowledge: Knowledge) -> list[SimRecord]:
    """One city day at the default (city-scale) volumes."""
    return list(scenario_for(knowledge, seed=11).timeline(DAY_START, until_ms=DAY_START + DAY_MS))


def text_of(record: SimRecord) -> str:
    return str(record.value.get("text", "")) if isinstance(record.value, dict) else ""


def test_places_cover_every_street_and_locate_where_they_claim(knowledge: Knowledge) -> None:
    places = district_places(knowledge.city)
    addressed = [p for p in places if p.address]
    assert len(addressed) >= 3000 and len({p.address for p in addressed}) == len(addressed)
    streets = {s.code for s in knowledge.city.streets.values()}
    assert {p.street_code for p in places} == streets == {p.street_code for p in addressed}
    assert len(streets) == 13
    cells = {knowledge.city.cell_of(p.lat, p.lon) for p in places}
    assert cells == set(knowledge.city.cell_street), "every grid cell of the district has a place"
    for place in places[::23]:  # a sample of both kinds, through the real locator
        location, reason = (knowledge.locate(None, None, place.address) if place.address
                            else knowledge.locate(place.lat, place.lon, None))
        assert location is not None, reason
        assert location.street_code == place.street_code, place


def test_same_seed_same_records_other_seed_others(knowledge: Knowledge) -> None:
    def first(seed: int) -> list[tuple[int, str, bytes]]:
        return [(r.ts_ms, r.topic, r.payload()) for r in scenario_for(knowledge, seed).timeline(DAY_START, count=500)]

    assert first(5) == first(5)
    assert first(5) != first(6)


def test_records_come_in_event_time_order_and_keep_the_daily_volume(day: list[SimRecord]) -> None:
    assert [r.ts_ms for r in day] == sorted(r.ts_ms for r in day)
    calls = sum(1 for r in day if r.kind == "hotline")
    assert 27_000 < calls < 33_000  # 30,000 a day, a Poisson count


def test_calls_follow_the_day(day: list[SimRecord]) -> None:
    by_hour = collections.Counter(int(local_hour(r.ts_ms)) for r in day if r.kind == "hotline")
    assert by_hour[10] > 10 * by_hour[3]
    inspectors = collections.Counter(int(local_hour(r.ts_ms)) for r in day if r.kind == "field")
    assert inspectors[2] == 0 and inspectors[10] > 0  # nobody patrols at night


def test_a_storm_floods_a_few_low_spots_with_calls(day: list[SimRecord]) -> None:
    flooding = [r for r in day if r.topic == "hotline.calls" and "积水" in text_of(r)]
    during = [r for r in flooding if 16 <= local_hour(r.ts_ms) < 18]
    assert len(during) > 10 * (len(flooding) - len(during)) / 22 * 2  # per 2 h, far above the rest of the day
    # the caller names the place first: "{place}下雨后路面积水很深…" / "{place}马路积水好几天了…"
    spots = {text_of(r).split("下雨后")[0].split("马路积水")[0] for r in during if r.kind == "storm"}
    assert 1 < len(spots - {""}) <= 12
    water = [r for r in day if r.topic == "camera.alerts" and isinstance(r.value, dict)
             and r.value.get("type") == "water_logging"]
    assert water and all(16 <= local_hour(r.ts_ms) < 18 for r in water)


def test_an_event_brings_crowd_alerts_from_one_area(day: list[SimRecord], knowledge: Knowledge) -> None:
    crowd = [r for r in day if r.kind == "crowd" and not r.malformed]
    assert len(crowd) > 500
    assert all(19 <= local_hour(r.ts_ms) < 22 for r in crowd)
    areas = {knowledge.devices.cameras[r.value["camera_id"]].area for r in crowd}  # type: ignore[index]
    assert len(areas) == 1
    assert max(r.value["count"] for r in crowd) > 3000  # type: ignore[index]


def test_the_same_problem_comes_from_several_sources(day: list[SimRecord]) -> None:
    follow_ups = [r for r in day if r.kind == "follow_up" and not r.malformed]
    assert len(follow_ups) > 0.05 * sum(1 for r in day if r.kind in ("hotline", "camera"))
    assert {r.topic for r in follow_ups} == {"hotline.calls", "field.reports"}
    # every follow-up repeats an earlier record's place within two hours
    seen: dict[str, int] = {}
    matched = 0
    for record in day:
        if record.malformed or not isinstance(record.value, dict):
            continue
        place = record.value.get("address") or ""
        if record.kind == "follow_up" and place and place in seen and record.ts_ms - seen[place] <= 2 * 3_600_000:
            matched += 1
        if place:
            seen[place] = record.ts_ms
    assert matched > 0.5 * sum(1 for r in follow_ups if isinstance(r.value, dict) and r.value.get("address"))


def test_malformed_records_fail_their_schema_and_the_rest_pass(day: list[SimRecord]) -> None:
    codec = registry()
    malformed = [r for r in day if r.malformed]
    share = len(malformed) / len(day)
    assert 0.003 < share < 0.007  # configured 0.005
    for record in malformed:
        with pytest.raises(DecodeError):
            codec.decode(record.payload(), RAW_SCHEMAS[record.topic])
    for record in day[::50]:
        if not record.malformed:
            codec.decode(record.payload(), RAW_SCHEMAS[record.topic])


def test_share_of_malformed_is_configurable(knowledge: Knowledge) -> None:
    scenario = scenario_for(knowledge, 3, ScenarioConfig(malformed_share=0.2))
    records = list(scenario.timeline(DAY_START, count=3000))
    assert 0.15 < sum(r.malformed for r in records) / len(records) < 0.25
    clean = scenario_for(knowledge, 3, ScenarioConfig(malformed_share=0.0))
    assert not any(r.malformed for r in clean.timeline(DAY_START, count=3000))


def test_most_reports_at_district_volume_open_their_own_case(knowledge: Knowledge) -> None:
    """A district's volume (3,000 calls a day) through the real ingest and case engine: reports spread over
    the district instead of folding into a handful of cases."""
    config = ScenarioConfig(hotline_per_day=3000, field_per_day=1200, camera_per_day=600, registry_per_day=60,
                            tracks_per_day=0, bursts=(), malformed_share=0.0)
    scenario = scenario_for(knowledge, 2, config, sources=["hotline", "field", "camera", "registry"])
    records = [r for r in scenario.timeline(DAY_START, count=4000) if r.topic != "field.tracks"]
    codec, ingestor = registry(), Ingestor(knowledge)
    engine = CaseEngine(knowledge, {}, {}, auto_dispatch=True)
    decoded = [(r, codec.decode(r.payload(), RAW_SCHEMAS[r.topic])[1]) for r in records]
    ingestor.prepare([d for _, d in decoded])
    signals = 0
    streets = set()
    for record, raw in decoded:
        try:
            result = ingestor.ingest(RAW_SCHEMAS[record.topic], raw, record.ts_ms)
        except RejectRecord:
            continue
        for signal in result.signals:
            signals += 1
            streets.add(signal.street_code)
            engine.on_signal(signal)
    assert signals > 3000
    assert len(streets) == 13
    assert len(engine.cases) > 0.4 * signals, (len(engine.cases), signals)


def test_live_clock_stamps_now_and_plays_due_follow_ups(knowledge: Knowledge) -> None:
    config = ScenarioConfig(follow_up_share=1.0, malformed_share=0.0)
    scenario = scenario_for(knowledge, 4, config, sources=["hotline"])
    now = DAY_START + 10 * 3_600_000
    first = scenario.next_at(now)
    assert first is not None and first.ts_ms == now and first.value["received_at"].startswith(  # type: ignore[index]
        "2026-11-20T10:00:00")
    later = now + 3 * 3_600_000  # the follow-up of the first call is due by now
    follow_up = scenario.next_at(later)
    assert follow_up is not None and follow_up.kind == "follow_up" and follow_up.ts_ms == later


def test_silent_hours_give_nothing_on_the_live_clock(knowledge: Knowledge) -> None:
    scenario = CityScenario(1, district_places(knowledge.city), config=ScenarioConfig(
        bursts=(Burst("storm_calls", 16, 1, 100.0),)), sources=["field"])
    assert scenario.next_at(DAY_START + 3 * 3_600_000) is None  # 03:00, no patrols
    assert scenario.next_at(DAY_START + 10 * 3_600_000) is not None
