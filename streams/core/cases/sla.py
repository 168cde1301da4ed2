"""SLA clocks (时限) and lights (亮灯).

Four clocks measure how long a case stage has run, each in the city's time zone (Asia/Shanghai):

- ``emergency_hours``  紧急工作时: continuous, day and night.
- ``work_hours``       工作时: 08:00–12:00 and 14:00–18:00 on working days only.
- ``work_days``        工作日: the whole of each working day; rest days do not count.
- ``calendar_days``    自然日: continuous (limits are still given in minutes).

Working days are mainland-China working days from the maintained ``chinese-calendar`` package
(public holidays and 调休 make-up working days), corrected by a local override file
(``holidays_override.yaml``: extra ``holidays`` and ``workdays`` dates an officer can edit).

All functions take and return epoch milliseconds; ``deadline`` and ``elapsed_ms`` are inverses:
``elapsed_ms(s, deadline_ms(s, clock, a), clock) == a``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path

import chinese_calendar
import yaml

from streams.core.times import CITY_TZ

MINUTE_MS = 60_000
DAY_MS = 86_400_000

EMERGENCY_HOURS = "emergency_hours"  # 紧急工作时
WORK_HOURS = "work_hours"            # 工作时
WORK_DAYS = "work_days"              # 工作日
CALENDAR_DAYS = "calendar_days"      # 自然日
CLOCKS = (EMERGENCY_HOURS, WORK_HOURS, WORK_DAYS, CALENDAR_DAYS)

# Office hours of the 工作时 clock (local time): morning and afternoon sessions.
WORK_SESSIONS = ((time(8, 0), time(12, 0)), (time(14, 0), time(18, 0)))

YELLOW_SHARE = 0.8  # yellow light 黄灯 once 80% of the limit is used

GREEN, YELLOW, RED = "green", "yellow", "red"
LIGHT_RANK = {GREEN: 0, YELLOW: 1, RED: 2}

DEFAULT_OVERRIDE_FILE = Path(__file__).resolve().parent.parent / "data" / "holidays_override.yaml"


class CalendarError(ValueError):
    """The override file or a clock name is wrong; the message says where."""


class WorkCalendar:
    """Which local dates are working days: chinese-calendar, then the local override file."""

    def __init__(self, override_file: Path | None = DEFAULT_OVERRIDE_FILE) -> None:
        self.extra_holidays: set[date] = set()
        self.extra_workdays: set[date] = set()
        if override_file is not None and Path(override_file).exists():
            self._load_override(Path(override_file))
        self._cache: dict[date, bool] = {}
        # (day, clock) -> the day's running windows: the calendar does not change once loaded
        self.windows: dict[tuple[date, str], tuple[tuple[int, int], ...]] = {}

    def _load_override(self, path: Path) -> None:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise CalendarError(f"{path}: must be a mapping with 'holidays' and/or 'workdays' lists")
        unknown = set(data) - {"holidays", "workdays"}
        if unknown:
            raise CalendarError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: holidays, workdays")
        for key, target in (("holidays", self.extra_holidays), ("workdays", self.extra_workdays)):
            for i, item in enumerate(data.get(key) or []):
                try:
                    target.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
                except ValueError as exc:
                    raise CalendarError(f"{path}: {key}[{i}] is not a YYYY-MM-DD date: {item!r}") from exc
        both = self.extra_holidays & self.extra_workdays
        if both:
            raise CalendarError(f"{path}: dates listed as both holiday and workday: {sorted(map(str, both))}")

    def is_workday(self, day: date) -> bool:
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        if day in self.extra_workdays:
            result = True
        elif day in self.extra_holidays:
            result = False
        else:
            try:
                result = chinese_calendar.is_workday(day)
            except NotImplementedError:
                # Outside the years the package knows (it is updated each year when the State Council
                # publishes the schedule): fall back to Monday–Friday; the override file can correct it.
                result = day.weekday() < 5
        self._cache[day] = result
        return result


@lru_cache(maxsize=1)
def default_calendar() -> WorkCalendar:
    return WorkCalendar()


def _check_clock(clock: str) -> None:
    if clock not in CLOCKS:
        raise CalendarError(f"unknown SLA clock {clock!r}; expected one of {', '.join(CLOCKS)}")


def _local_midnight_ms(day: date) -> int:
    return int(datetime.combine(day, time(0, 0), CITY_TZ).timestamp() * 1000)


def _at_ms(day: date, t: time) -> int:
    return int(datetime.combine(day, t, CITY_TZ).timestamp() * 1000)


# Local days already worked out: UTC day number -> the local days (start ms, end ms, date) overlapping it.
_LOCAL_DAYS: dict[int, list[tuple[int, int, date]]] = {}
_LOCAL_DAYS_KEPT = 4096


def local_date(ms: int) -> date:
    """The city's local date of an instant. Served from the local days worked out before (the engine asks for
    every report and every timer), each kept only when both its ends have that date and one UTC offset (no
    clock change inside), so the answer is ``datetime.fromtimestamp(ms / 1000, CITY_TZ).date()``."""
    for start, end, day in _LOCAL_DAYS.get(ms // DAY_MS, ()):
        if start <= ms < end:
            return day
    day = datetime.fromtimestamp(ms / 1000, CITY_TZ).date()
    start, end = _local_midnight_ms(day), _local_midnight_ms(day + timedelta(days=1))
    first, last = datetime.fromtimestamp(start / 1000, CITY_TZ), datetime.fromtimestamp((end - 1) / 1000, CITY_TZ)
    if start <= ms < end and first.date() == day == last.date() and first.utcoffset() == last.utcoffset():
        if len(_LOCAL_DAYS) > _LOCAL_DAYS_KEPT:
            _LOCAL_DAYS.clear()
        for utc_day in range(start // DAY_MS, (end - 1) // DAY_MS + 1):
            _LOCAL_DAYS.setdefault(utc_day, []).append((start, end, day))
    return day


def _day_windows(day: date, clock: str, calendar: WorkCalendar) -> tuple[tuple[int, int], ...]:
    """The spans of one local date during which the clock runs, as epoch ms [start, end) (cached per calendar)."""
    key = (day, clock)
    windows = calendar.windows.get(key)
    if windows is None:
        windows = calendar.windows[key] = tuple(_work_out_windows(day, clock, calendar))
    return windows


def _work_out_windows(day: date, clock: str, calendar: WorkCalendar) -> list[tuple[int, int]]:
    if clock in (EMERGENCY_HOURS, CALENDAR_DAYS):
        return [(_local_midnight_ms(day), _local_midnight_ms(day + timedelta(days=1)))]
    if not calendar.is_workday(day):
        return []
    if clock == WORK_DAYS:
        return [(_local_midnight_ms(day), _local_midnight_ms(day + timedelta(days=1)))]
    return [(_at_ms(day, a), _at_ms(day, b)) for a, b in WORK_SESSIONS]


def _windows_from(start_ms: int, clock: str, calendar: WorkCalendar) -> Iterator[tuple[int, int]]:
    day = local_date(start_ms)
    while True:
        for a, b in _day_windows(day, clock, calendar):
            if b > start_ms:
                yield max(a, start_ms), b
        day += timedelta(days=1)


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in intervals if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _running_ms(start_ms: int, end_ms: int, clock: str, calendar: WorkCalendar) -> int:
    if end_ms <= start_ms:
        return 0
    if clock in (EMERGENCY_HOURS, CALENDAR_DAYS):
        return end_ms - start_ms
    total = 0
    for a, b in _windows_from(start_ms, clock, calendar):
        if a >= end_ms:
            break
        total += min(b, end_ms) - a
    return total


def elapsed_ms(start_ms: int, end_ms: int, clock: str, suspended: Iterable[tuple[int, int]] = (),
               calendar: WorkCalendar | None = None) -> int:
    """Time the clock ran between start and end, minus the suspended (挂账) intervals."""
    _check_clock(clock)
    cal = calendar or default_calendar()
    total = _running_ms(start_ms, end_ms, clock, cal)
    for a, b in _merge(suspended):
        a, b = max(a, start_ms), min(b, end_ms)
        if b > a:
            total -= _running_ms(a, b, clock, cal)
    return total


def deadline_ms(start_ms: int, clock: str, amount_ms: int, calendar: WorkCalendar | None = None) -> int:
    """The earliest instant at which ``amount_ms`` of the clock has run since start."""
    _check_clock(clock)
    if amount_ms < 0:
        raise ValueError(f"an SLA limit cannot be negative: {amount_ms} ms")
    if clock in (EMERGENCY_HOURS, CALENDAR_DAYS) or amount_ms == 0:
        return start_ms + amount_ms
    cal = calendar or default_calendar()
    remaining = amount_ms
    for a, b in _windows_from(start_ms, clock, cal):
        if b - a >= remaining:
            return a + remaining
        remaining -= b - a
    raise AssertionError("unreachable: the window iterator is endless")


def deadline(start_ms: int, clock: str, minutes: int, calendar: WorkCalendar | None = None) -> int:
    """Deadline of a limit given in minutes of ``clock`` (the KB's unit)."""
    return deadline_ms(start_ms, clock, minutes * MINUTE_MS, calendar)


def elapsed(start_ms: int, end_ms: int, clock: str, suspended: Iterable[tuple[int, int]] = (),
            calendar: WorkCalendar | None = None) -> int:
    """Elapsed clock time in ms (alias kept for readability at call sites)."""
    return elapsed_ms(start_ms, end_ms, clock, suspended, calendar)


def yellow_amount_ms(limit_ms: int) -> int:
    """Clock time after which the light turns yellow (≥ 80% of the limit used)."""
    return math.ceil(limit_ms * YELLOW_SHARE)


def light(used_ms: int, limit_ms: int | None) -> str:
    """green; yellow when ≥ 80% of the limit is used; red when overdue (more than the limit used)."""
    if not limit_ms:
        return GREEN
    if used_ms > limit_ms:
        return RED
    if used_ms >= yellow_amount_ms(limit_ms):
        return YELLOW
    return GREEN


def worst(*lights: str) -> str:
    return max(lights, key=lambda x: LIGHT_RANK[x]) if lights else GREEN
