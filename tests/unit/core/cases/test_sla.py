"""SLA clocks: 紧急工作时, 工作时, 工作日 (with chinese-calendar holidays/调休 and the override file), 自然日."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.cases import sla

TZ = ZoneInfo("Asia/Shanghai")
MIN = sla.MINUTE_MS


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp() * 1000)


def local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, TZ)


def test_work_hours_skip_lunch_and_evening():
    # Wed 2016-03-23 15:53 + 8 working hours: 2h07m today, 4h Thursday morning, 1h53m after lunch
    assert local(sla.deadline(at(2016, 3, 23, 15, 53), "work_hours", 480)) == datetime(2016, 3, 24, 15, 53, tzinfo=TZ)
    # started during lunch: the clock waits for 14:00
    assert local(sla.deadline(at(2016, 3, 23, 12, 30), "work_hours", 30)) == datetime(2016, 3, 23, 14, 30, tzinfo=TZ)
    # Friday 17:00 + 2h → Monday 09:00
    assert local(sla.deadline(at(2016, 3, 25, 17, 0), "work_hours", 120)) == datetime(2016, 3, 28, 9, 0, tzinfo=TZ)


def test_work_days_follow_national_holidays_and_make_up_days():
    # 2026 National Day: 1–7 October off; Tuesday 30 Sep 10:00 + 2 working days → 9 October 10:00
    assert local(sla.deadline(at(2026, 9, 30, 10), "work_days", 2 * 1440)) == datetime(2026, 10, 9, 10, tzinfo=TZ)
    cal = sla.default_calendar()
    assert not cal.is_workday(date(2026, 10, 5))         # a Monday inside the holiday
    assert cal.is_workday(date(2026, 9, 28))              # an ordinary Monday
    # 调休: Sunday 2024-02-04 was a make-up working day before the Spring Festival
    assert cal.is_workday(date(2024, 2, 4))
    assert sla.elapsed_ms(at(2024, 2, 4), at(2024, 2, 5), "work_days") == 1440 * MIN


def test_emergency_and_calendar_clocks_never_stop():
    start = at(2026, 10, 1, 23, 0)  # a holiday night
    assert sla.deadline(start, "emergency_hours", 120) == start + 120 * MIN
    assert sla.elapsed_ms(start, start + 3 * 86_400_000, "calendar_days") == 3 * 1440 * MIN


def test_suspended_time_does_not_count():
    start, end = at(2026, 11, 2, 0), at(2026, 11, 3, 0)   # Monday, emergency clock: 24h
    suspended = [(at(2026, 11, 2, 6), at(2026, 11, 2, 10)), (at(2026, 11, 2, 8), at(2026, 11, 2, 12))]
    assert sla.elapsed_ms(start, end, "emergency_hours", suspended) == 18 * 60 * MIN   # overlap merged: 6h off
    # work_hours clock: the 08:00-12:00 session is suspended entirely
    assert sla.elapsed_ms(start, end, "work_hours", suspended) == 4 * 60 * MIN


def test_override_file_adds_rest_and_working_days(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text("holidays: [2026-11-04]\nworkdays: ['2026-11-08']\n", encoding="utf-8")
    cal = sla.WorkCalendar(path)
    assert not cal.is_workday(date(2026, 11, 4))   # a Wednesday declared off
    assert cal.is_workday(date(2026, 11, 8))       # a Sunday declared a working day
    # Tuesday 2026-11-03 00:00 + 2 work days: Tuesday, then (Wednesday off) Thursday
    assert local(sla.deadline(at(2026, 11, 3), "work_days", 2 * 1440, cal)) == datetime(2026, 11, 6, tzinfo=TZ)


@pytest.mark.parametrize("text,message", [
    ("holidays: [not-a-date]\n", r"holidays\[0\] is not a YYYY-MM-DD date"),
    ("holiday: [2026-01-01]\n", "unknown key"),
    ("holidays: [2026-01-05]\nworkdays: [2026-01-05]\n", "both holiday and workday"),
    ("- 2026-01-01\n", "must be a mapping"),
])
def test_override_file_errors_are_clear(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(sla.CalendarError, match=message):
        sla.WorkCalendar(path)


def test_packaged_override_file_loads():
    cal = sla.WorkCalendar(sla.DEFAULT_OVERRIDE_FILE)
    assert cal.is_workday(date(2026, 11, 23))


def test_unknown_clock_is_an_error():
    with pytest.raises(sla.CalendarError, match="unknown SLA clock 'work_weeks'"):
        sla.deadline(0, "work_weeks", 10)


def test_lights():
    assert sla.light(0, 100) == "green"
    assert sla.light(79, 100) == "green"
    assert sla.light(80, 100) == "yellow"
    assert sla.light(100, 100) == "yellow"
    assert sla.light(101, 100) == "red"
    assert sla.light(10_000, None) == "green"


# 2015..2027: years chinese-calendar knows, plus the weekday fallback beyond
starts = st.integers(min_value=at(2015, 1, 1), max_value=at(2027, 12, 1))
clocks = st.sampled_from(sla.CLOCKS)
minutes = st.integers(min_value=0, max_value=30 * 1440)


@settings(max_examples=300, deadline=None)
@given(starts, clocks, minutes)
def test_elapsed_inverts_deadline(start, clock, m):
    end = sla.deadline(start, clock, m)
    assert end >= start
    assert sla.elapsed_ms(start, end, clock) == m * MIN


@settings(max_examples=200, deadline=None)
@given(starts, clocks, st.integers(0, 20 * 86_400_000), st.integers(0, 20 * 86_400_000))
def test_elapsed_is_monotonic_and_additive(start, clock, d1, d2):
    mid, end = start + d1, start + d1 + d2
    a, b = sla.elapsed_ms(start, mid, clock), sla.elapsed_ms(mid, end, clock)
    assert 0 <= a <= d1 and 0 <= b <= d2
    assert sla.elapsed_ms(start, end, clock) == a + b


@settings(max_examples=200, deadline=None)
@given(starts, clocks, minutes, minutes)
def test_deadline_is_monotonic_in_the_limit(start, clock, m1, m2):
    lo, hi = sorted((m1, m2))
    assert sla.deadline(start, clock, lo) <= sla.deadline(start, clock, hi)


@settings(max_examples=200, deadline=None)
@given(starts, clocks, st.integers(0, 10 * 86_400_000),
       st.lists(st.tuples(st.integers(0, 10 * 86_400_000), st.integers(0, 86_400_000)), max_size=4))
def test_suspension_only_ever_removes_time(start, clock, span, pauses):
    intervals = [(start + a, start + a + b) for a, b in pauses]
    full = sla.elapsed_ms(start, start + span, clock)
    less = sla.elapsed_ms(start, start + span, clock, intervals)
    assert 0 <= less <= full
