"""Patrol workload and zero-reports: the field state machines."""
from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.field import (
    FieldRegistry,
    PatrolProcessor,
    PatrolRules,
    Station,
    due_alerts,
    local_day,
    mark_alerted,
    mark_reported,
    patrol_row,
    patrol_step,
)
from streams.core.knowledge.geo import City
from streams.core.knowledge.knowledge import DATA_DIR

TZ = timezone(timedelta(hours=8))
RULES = PatrolRules(jitter_m=15, max_speed_kmh=30, idle_after_minutes=10, gap_minutes=20)
START = datetime(2026, 11, 20, 8, 0, tzinfo=TZ)
LAT, LON = 31.1725, 121.4062            # 怡桂苑
M_LAT = 1 / 111_320                     # degrees per metre (latitude)
M_LON = 1 / (111_320 * math.cos(math.radians(LAT)))


@pytest.fixture(scope="module")
def city() -> City:
    return City.load(DATA_DIR / "city" / "city.yaml")


@pytest.fixture(scope="module")
def registry(city: City) -> FieldRegistry:
    return FieldRegistry.load(DATA_DIR / "city" / "field.yaml", city)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def fold(fixes: list[tuple[int, float, float]]):  # noqa: ANN201 - test helper
    state = None
    for ts, lat, lon in fixes:
        state = patrol_step(state, ts, lat, lon, f"c{round(lat, 3)}", RULES) or state
    return state


def test_standing_still_with_gps_jitter_is_no_distance_and_one_idle_period() -> None:
    import random
    rng = random.Random(3)
    fixes = [(ms(START + timedelta(seconds=30 * i)), LAT + rng.uniform(-7, 7) * M_LAT, LON + rng.uniform(-7, 7) * M_LON)
             for i in range(61)]   # 30 minutes on the spot, fixes wandering ±7 m
    state = fold(fixes)
    assert state["distance_m"] == 0 and state["moving_ms"] == 0
    row = patrol_row("INS-014", state, FieldRegistry.empty())
    assert (row["idle_periods"], row["idle_s"], row["distance_m"]) == (1, 1800, 0.0)


def test_walking_a_street_counts_its_length_not_the_jitter() -> None:
    import random
    rng = random.Random(4)
    # 1 km east at 1.25 m/s, a fix every 10 s, ±5 m jitter
    fixes = [(ms(START + timedelta(seconds=10 * i)), LAT + rng.uniform(-5, 5) * M_LAT,
              LON + (12.5 * i + rng.uniform(-5, 5)) * M_LON) for i in range(81)]
    row = patrol_row("INS-014", fold(fixes), FieldRegistry.empty())
    assert 950 <= row["distance_m"] <= 1080
    assert row["idle_periods"] == 0 and row["moving_s"] == 800


def test_a_glitch_an_old_fix_and_a_gap() -> None:
    t0 = ms(START)
    state = fold([(t0, LAT, LON), (t0 + 10_000, LAT + 2000 * M_LAT, LON),   # 2 km in 10 s: a glitch
                  (t0 + 20_000, LAT + 20 * M_LAT, LON), (t0 + 15_000, LAT, LON)])  # 15 s after 20 s: old
    assert state["dropped"] == 2 and state["accepted"] == 2 and round(state["distance_m"]) == 20
    later = patrol_step(state, t0 + 3_600_000, LAT + 900 * M_LAT, LON, "x", RULES)   # an hour offline
    assert later is not None and later["distance_m"] == state["distance_m"] and later["moving_ms"] == state["moving_ms"]


def test_a_new_day_starts_afresh_and_the_old_day_is_final() -> None:
    t0 = ms(START)
    state = fold([(t0, LAT, LON), (t0 + 60_000, LAT + 50 * M_LAT, LON)])
    tomorrow = patrol_step(state, t0 + 86_400_000, LAT, LON, "c", RULES)
    assert tomorrow is not None and tomorrow["day"] == "2026-11-21" and tomorrow["distance_m"] == 0
    assert patrol_step(tomorrow, t0 + 120_000, LAT, LON, "c", RULES) is None   # yesterday's late fix


def test_coverage_against_the_assigned_grid(city: City, registry: FieldRegistry) -> None:
    grid = registry.grids[registry.inspectors["INS-014"]]   # XH07-G2 around 怡桂苑
    proc = PatrolProcessor(city, registry)
    rows: list[dict[str, object]] = []
    for i, cell in enumerate(sorted(grid.cells)[:4]):
        import h3
        lat, lon = h3.cell_to_latlng(cell)
        proc.process("INS-014", ms(START + timedelta(minutes=5 * i)), lat, lon, i, rows)
    [row] = proc.flush()
    assert (row["cells_assigned"], row["cells_assigned_covered"], row["cells_covered"]) == (7, 4, 4)
    assert row["grid_id"] == "XH07-G2" and row["street"] == "虹梅街道" and row["fixes"] == 4
    assert [r["cell"] for r in rows] == sorted(grid.cells)[:4] and proc.flush() == []


fix_steps = st.lists(st.tuples(st.sampled_from(["INS-001", "INS-014"]),
                               st.one_of(st.sampled_from([-30, 0, 10, 30, 600, 1500]), st.integers(1, 400)),
                               st.sampled_from([0, 3, 10, 40, 300, 5000])), min_size=1, max_size=50)


@settings(max_examples=150, deadline=None)
@given(fix_steps, st.data())
def test_patrol_rows_survive_a_crash_exactly(plan: list[tuple[str, int, int]], data: st.DataObject) -> None:
    """As for devices: changelog states newer than the checkpoint, a committed offset older than both; the last
    row of each inspector-day (the highest version, what the store keeps) is the uninterrupted one."""
    city = City.load(DATA_DIR / "city" / "city.yaml")
    registry = FieldRegistry.load(DATA_DIR / "city" / "field.yaml", city)
    fixes, at, north = [], START, 0.0
    for inspector, seconds, metres in plan:
        at += timedelta(seconds=seconds)
        north += metres
        fixes.append((inspector, ms(at), LAT + north * M_LAT, LON))

    def last_rows(rows: list[dict[str, object]]) -> dict[tuple[object, object], str]:
        best: dict[tuple[object, object], dict[str, object]] = {}
        for row in rows:
            key = (row["inspector_id"], row["day_ms"])
            if key not in best or int(row["version"]) >= int(best[key]["version"]):  # type: ignore[call-overload]
                best[key] = row
        return {k: json.dumps(v, sort_keys=True) for k, v in best.items()}

    whole = PatrolProcessor(city, registry)
    expected: list[dict[str, object]] = []
    for offset, (inspector, ts, lat, lon) in enumerate(fixes):
        whole.process(inspector, ts, lat, lon, offset, [])
        expected += whole.flush()  # type: ignore[arg-type]
    n = len(fixes)
    checkpoint_at, states_at = sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
    first, produced, changelog, checkpoint = PatrolProcessor(city, registry), [], {}, None
    for offset, (inspector, ts, lat, lon) in enumerate(fixes[:states_at]):
        first.process(inspector, ts, lat, lon, offset, [])
        produced += first.flush()
        if offset + 1 == checkpoint_at:
            checkpoint = json.loads(json.dumps(first.checkpoint()))
    changelog = json.loads(json.dumps(first.take_dirty()))
    second = PatrolProcessor(city, registry)
    start = second.restore(checkpoint, changelog)
    for offset in range(start or 0, n):
        inspector, ts, lat, lon = fixes[offset]
        second.process(inspector, ts, lat, lon, offset, [])
        produced += second.flush()
    assert last_rows(produced) == last_rows(expected)


# ---------------------------------------------------------------- zero-reports
STATIONS = [Station("STA-001", "怡桂苑", "虹梅街道", "XH07"), Station("STA-002", "江南新村", "斜土街道", "XH03")]
DEADLINE = time(17, 0)


def workdays(day: date) -> bool:
    return day.weekday() < 5


def test_a_station_without_a_report_by_the_deadline_is_alerted_once() -> None:
    friday = datetime(2026, 11, 20, tzinfo=TZ)   # a Friday
    since = ms(friday)
    states = {"STA-001": mark_reported(None, ms(friday.replace(hour=9)))}
    assert due_alerts(STATIONS, states, ms(friday.replace(hour=16, minute=59)), DEADLINE, workdays, since) == []
    [(station, alert)] = due_alerts(STATIONS, states, ms(friday.replace(hour=17)), DEADLINE, workdays, since)
    assert station == "STA-002" and alert["kind"] == "zero_report_missing" and alert["departments"] == ["街道网格中心"]
    assert alert["ts_ms"] == alert["deadline_ms"] == ms(friday.replace(hour=17))   # stamped at the deadline
    assert alert["case_id"] == "ZR-STA-002-20261120" and alert["street"] == "斜土街道"
    states["STA-002"] = mark_alerted(None, "2026-11-20")
    assert due_alerts(STATIONS, states, ms(friday.replace(hour=23)), DEADLINE, workdays, since) == []
    # without a last check (a worker's first tick) today and yesterday are checked: Thursday is due for both
    assert {a["case_id"] for _, a in due_alerts(STATIONS, states, ms(friday.replace(hour=23)), DEADLINE, workdays)} \
        == {"ZR-STA-001-20261119", "ZR-STA-002-20261119"}


def test_rest_days_need_no_report_and_a_late_report_still_counts_for_its_day() -> None:
    saturday = datetime(2026, 11, 21, 18, tzinfo=TZ)
    assert due_alerts(STATIONS, {}, ms(saturday), DEADLINE, workdays, since_ms=ms(saturday - timedelta(hours=6))) == []
    monday = datetime(2026, 11, 23, 16, tzinfo=TZ)
    states = {s.id: mark_reported(None, ms(monday)) for s in STATIONS}
    assert due_alerts(STATIONS, states, ms(monday.replace(hour=18)), DEADLINE, workdays, ms(monday)) == []
    assert local_day(ms(monday)) == date(2026, 11, 23)


@given(st.lists(st.tuples(st.sampled_from(["STA-001", "STA-002"]), st.integers(0, 4 * 24 * 60)), max_size=20),
       st.lists(st.integers(0, 4 * 24 * 60), min_size=1, max_size=10))
def test_alerts_depend_on_events_not_on_when_the_clock_is_read(reports: list[tuple[str, int]],
                                                                ticks: list[int]) -> None:
    """However often the clock ticks (replay ticks at every event, the worker every second), every working day
    without a report gets exactly one alert per station, stamped at its deadline."""
    base = ms(datetime(2026, 11, 19, tzinfo=TZ))
    end = base + 4 * 86_400_000

    def run(tick_minutes: list[int]) -> list[str]:
        states: dict = {}
        alerts, since = [], base
        events = sorted([(m, "report", s) for s, m in reports] + [(m, "tick", "") for m in tick_minutes] +
                        [(4 * 24 * 60, "tick", "")])
        for minute, kind, station in events:
            now = base + minute * 60_000
            if kind == "report":
                states[station] = mark_reported(states.get(station), now)
                continue
            for sid, alert in due_alerts(STATIONS, states, now, DEADLINE, workdays, since):
                states[sid] = mark_alerted(states.get(sid), datetime.fromtimestamp(alert["ts_ms"] / 1000, TZ).date()
                                           .isoformat())
                alerts.append(alert["alert_id"])
            since = now
        return sorted(alerts)

    assert run(ticks) == run([]) and end > base
    assert len(run(ticks)) == len(set(run(ticks)))


def test_sample_stations_and_grids_load(registry: FieldRegistry) -> None:
    assert len(registry.stations) == 13 and len(registry.grids) == 26 and len(registry.inspectors) == 26
    assert all(len(g.cells) >= 1 for g in registry.grids.values())
    assert FieldRegistry.load(Path("/nonexistent/field.yaml"), None).stations == {}  # type: ignore[arg-type]
