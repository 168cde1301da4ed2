"""The 考核 KPIs on replayed history (real KB, ingest and engine, chdb): credited to every department on a
case, 按期 judged on the department's own stage only, inspector/committee 有效上报率 and 按时核查率."""
from __future__ import annotations

import io
from datetime import datetime

import pytest

from streams.replay import replay
from streams.settings import Settings
from streams.wall import queries as wall
from tests.fixtures.clickhouse import open_test_store
from tests.paths import TEST_DATA

TZ = wall.CITY_TZ


def month(year: int, month_: int) -> tuple[int, int]:
    start = datetime(year, month_, 1, tzinfo=TZ)
    end = datetime(year + (month_ == 12), month_ % 12 + 1, 1, tzinfo=TZ)
    return int(start.timestamp()), int(end.timestamp()) - 1


@pytest.fixture(scope="module")
def store(request):
    store = open_test_store("chdb", request)
    for name in ("replay_seed000.jsonl", "replay_seeds.jsonl"):
        report = replay((TEST_DATA / name).read_text(encoding="utf-8").splitlines(), Settings(), store, None,
                        err=io.StringIO())
        assert report.invalid == 0
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def test_seed_000_is_on_time_for_the_housing_office_but_late_for_the_verifier(store):
    """The 群租 case closed after 6 days 23 hours: 房管办 handled it the next day (its own stage, on
    time); the 6-day 核查 was the committee's stage and counts against the committee only."""
    assert store.query("SELECT on_time FROM cases FINAL")[0]["on_time"] == 0  # the whole case went red somewhere
    [housing] = wall.run(store, "department_kpis", *month(2016, 3))
    assert housing["department"] == "房管办" and housing["closed"] == 1
    assert housing["on_time_rate"] == 1.0 and housing["grade"] == "A"
    [committee] = wall.run(store, "field_kpis", *month(2016, 3))
    assert committee["reporter_id"] == "怡桂苑居委会" and committee["valid_rate"] == 1.0
    assert committee["verifications"] == 1 and committee["verify_on_time_rate"] == 0.0


def test_every_department_on_a_case_is_credited(store):
    rows = {r["department"]: r for r in wall.run(store, "department_kpis", *month(2026, 11))}
    # 损坏房屋承重结构 goes to 物业公司 and 房管办: both are credited with it
    assert rows["物业公司"]["cases"] == 1 and rows["房管办"]["cases"] == 2
    assert rows["城管执法中队"]["cases"] == 2            # 占道经营 + 非法小广告
    assert rows["房管办"]["rework_rate"] == 0.5            # the 群租 case failed its verification once
    for row in rows.values():
        assert row["grade"] == wall.grade_of(row["score"])


def test_grade_bands():
    assert [wall.grade_of(s) for s in (100, 90, 89.9, 80, 70, 60, 59.9, 0)] == ["A", "A", "B", "B", "C", "D", "E", "E"]


def test_replayed_dispatches_name_the_street_instance(store):
    """Seed 000: 街道网格中心派遣虹梅街道房管办 - the dispatch row carries the instance and its kind."""
    rows = store.query("SELECT departments, units, primary_department, primary_unit FROM dispatches FINAL "
                       "WHERE ts_ms < 1500000000000")
    assert rows == [{"departments": ["房管办"], "units": ["虹梅街道房管办"], "primary_department": "房管办",
                     "primary_unit": "虹梅街道房管办"}]
    units = {r["unit"]: r for r in wall.run(store, "unit_kpis", *month(2026, 11))}
    assert units["斜土街道房管办"]["department"] == "房管办"        # 群租 at 斜土路1175弄
    kinds = {r["department"]: r["cases"] for r in wall.run(store, "department_kpis", *month(2026, 11))}
    rolled_up: dict[str, int] = {}
    for row in units.values():
        rolled_up[row["department"]] = rolled_up.get(row["department"], 0) + row["cases"]
    assert rolled_up == kinds                                      # the kind's figures are its instances' sum
