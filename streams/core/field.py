"""Field operations: grid inspectors' patrol workload and residential stations' daily zero-reports.

**Patrol** (网格巡查): an inspector's GPS fixes of one local day become a workload row — distance walked with
the GPS jitter filtered out, time moving, idle periods, unit cells covered against the inspector's assigned
responsibility grid (责任网格), fixes kept and dropped. The jitter filter keeps a fix only once it is more than
``jitter_m`` from the last kept one (a standing inspector's fixes wander a few metres: that is no distance);
a fix that would need more than ``max_speed_kmh`` from the last one is a glitch and dropped; time spent
within the jitter circle is an idle period once it lasts ``idle_after_minutes`` (shorter stops — checking a
shop front — are work and count as moving); a gap of ``gap_minutes`` without a fix is offline and counts as
neither. Out-of-order and repeated fixes are dropped (counted), so a replay yields the same row.

**Zero-reports** (零报告, 有事报事、无事报平安): every residential station reports each working day — an
item (any report of its own) or a "nothing to report". A station with neither by the daily deadline raises
one alert to its street centre, stamped at the deadline, so replaying the same events gives the same alerts.

Both are plain functions over JSON-able state; the worker keeps the state in changelogs, replay in memory.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import h3
from pydantic import BaseModel, ConfigDict, Field

from streams.core.ids import stable_id
from streams.core.knowledge.taxonomy import DataError, load_marked_yaml, validate_marked
from streams.core.times import CITY_TZ

if TYPE_CHECKING:
    from streams.core.knowledge.geo import City

STREET_CENTRE = "街道网格中心"
ZERO_REPORT_MISSING = "zero_report_missing"   # the sla.alerts kind


# ---------------------------------------------------------------- field.yaml
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RulesIn(_Strict):
    jitter_m: float = Field(15.0, gt=0)
    max_speed_kmh: float = Field(30.0, gt=0)
    idle_after_minutes: float = Field(10.0, gt=0)
    gap_minutes: float = Field(20.0, gt=0)


class _GridIn(_Strict):
    id: str = Field(min_length=1)
    street: str
    center: tuple[float, float]
    rings: int = Field(2, ge=0, le=8)


class _InspectorIn(_Strict):
    id: str = Field(min_length=1)
    grid: str


class _StationIn(_Strict):
    id: str = Field(min_length=1)
    community: str


class _FieldIn(_Strict):
    patrol: _RulesIn = _RulesIn()
    grids: list[_GridIn] = []
    inspectors: list[_InspectorIn] = []
    stations: list[_StationIn] = []


@dataclass(frozen=True)
class PatrolRules:
    jitter_m: float = 15.0
    max_speed_kmh: float = 30.0
    idle_after_minutes: float = 10.0
    gap_minutes: float = 20.0

    @property
    def idle_ms(self) -> int:
        return int(self.idle_after_minutes * 60_000)

    @property
    def gap_ms(self) -> int:
        return int(self.gap_minutes * 60_000)


@dataclass(frozen=True)
class Grid:
    """A responsibility grid 责任网格: the unit cells one inspector patrols."""

    id: str
    street: str
    cells: frozenset[str]


@dataclass(frozen=True)
class Station:
    """A residential station 居民区工作站 and where it reports to."""

    id: str
    community: str
    street: str
    street_code: str


@dataclass
class FieldRegistry:
    rules: PatrolRules
    grids: dict[str, Grid]
    inspectors: dict[str, str]        # inspector id -> grid id
    stations: dict[str, Station]

    @classmethod
    def empty(cls) -> FieldRegistry:
        return cls(PatrolRules(), {}, {}, {})

    @classmethod
    def load(cls, path: Path, city: City) -> FieldRegistry:
        """``field.yaml`` of the city data directory (absent: no grids, inspectors or stations)."""
        if not path.exists():
            return cls.empty()
        raw = load_marked_yaml(path)
        data = validate_marked(_FieldIn, raw, path)

        def fail(section: str, i: int, fld: str, problem: str) -> DataError:
            return DataError(path, raw[section].item_lines[i], f"{section}[{i}].{fld}", problem)

        grids: dict[str, Grid] = {}
        for i, g in enumerate(data.grids):
            if g.id in grids:
                raise fail("grids", i, "id", f"duplicate grid {g.id!r}")
            if g.street not in city.streets:
                raise fail("grids", i, "street", f"unknown street {g.street!r}")
            center = h3.latlng_to_cell(g.center[0], g.center[1], city.resolution)
            cells = frozenset(c for c in h3.grid_disk(center, g.rings) if c in city.cell_street)
            if not cells:
                raise fail("grids", i, "center", "the grid has no unit cell inside the district")
            grids[g.id] = Grid(g.id, g.street, cells)
        inspectors: dict[str, str] = {}
        for i, ins in enumerate(data.inspectors):
            if ins.id in inspectors:
                raise fail("inspectors", i, "id", f"duplicate inspector {ins.id!r}")
            if ins.grid not in grids:
                raise fail("inspectors", i, "grid", f"unknown grid {ins.grid!r}")
            inspectors[ins.id] = ins.grid
        stations: dict[str, Station] = {}
        for i, s in enumerate(data.stations):
            if s.id in stations:
                raise fail("stations", i, "id", f"duplicate station {s.id!r}")
            community = city.communities.get(s.community)
            if community is None:
                raise fail("stations", i, "community", f"unknown community {s.community!r}")
            stations[s.id] = Station(s.id, s.community, community.street, city.streets[community.street].code)
        rules = PatrolRules(data.patrol.jitter_m, data.patrol.max_speed_kmh, data.patrol.idle_after_minutes,
                            data.patrol.gap_minutes)
        return cls(rules, grids, inspectors, stations)


# ---------------------------------------------------------------- days
def local_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz=CITY_TZ).date()


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, time(0), tzinfo=CITY_TZ).timestamp() * 1000)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return float(h3.great_circle_distance((lat1, lon1), (lat2, lon2), unit="m"))


# ---------------------------------------------------------------- patrol
class PatrolDay(TypedDict):
    """One inspector's patrol of one local day so far (JSON-able)."""

    day: str
    received: int                  # fixes received (kept, within the jitter circle, or dropped)
    accepted: int                  # fixes used (the rest were dropped)
    dropped: int                   # out of order, repeated or impossible (a glitch)
    first_ms: int
    last_ms: int                   # newest accepted fix
    kept: list[float]              # [ts_ms, lat, lon] of the last kept fix (the centre of the jitter circle)
    still_since: int               # when the inspector arrived in the current jitter circle
    distance_m: float
    moving_ms: int
    idle_ms: int
    idle_periods: int
    cells: list[str]               # unit cells of accepted fixes, sorted


def patrol_step(state: PatrolDay | None, ts_ms: int, lat: float, lon: float, cell: str,
                rules: PatrolRules) -> PatrolDay | None:
    """One fix. Returns the day's new state; None when the fix belongs to a day before the state's (too late:
    that day's row is final). Never mutates ``state``."""
    day = local_day(ts_ms).isoformat()
    if state is None or day > state["day"]:
        return {"day": day, "received": 1, "accepted": 1, "dropped": 0, "first_ms": ts_ms, "last_ms": ts_ms,
                "kept": [float(ts_ms), lat, lon], "still_since": ts_ms, "distance_m": 0.0, "moving_ms": 0,
                "idle_ms": 0, "idle_periods": 0, "cells": [cell]}
    if day < state["day"]:
        return None
    new: PatrolDay = {**state, "received": state["received"] + 1}
    if ts_ms <= state["last_ms"]:
        new["dropped"] += 1
        return new
    _, kept_lat, kept_lon = state["kept"]
    moved = distance_m(kept_lat, kept_lon, lat, lon)
    since_last = ts_ms - state["last_ms"]
    if since_last > rules.gap_ms:   # offline: the time in between is neither moving nor idle
        _end_stay(new, rules)
        new["kept"], new["still_since"] = [float(ts_ms), lat, lon], ts_ms
    elif moved <= rules.jitter_m:   # still within the jitter circle
        pass
    elif moved / (since_last / 1000) > rules.max_speed_kmh / 3.6:
        new["dropped"] += 1         # a jump no inspector makes: a GPS glitch
        return new
    else:
        _end_stay(new, rules)
        new["moving_ms"] += since_last
        new["distance_m"] = round(new["distance_m"] + moved, 3)
        new["kept"], new["still_since"] = [float(ts_ms), lat, lon], ts_ms
    new["accepted"] += 1
    new["last_ms"] = ts_ms
    if cell not in state["cells"]:
        new["cells"] = sorted([*state["cells"], cell])
    return new


def _end_stay(state: PatrolDay, rules: PatrolRules) -> None:
    """The inspector leaves a jitter circle: the time spent in it was an idle period or part of the work."""
    stay = state["last_ms"] - state["still_since"]
    if stay >= rules.idle_ms:
        state["idle_ms"] += stay
        state["idle_periods"] += 1
    else:
        state["moving_ms"] += stay


class PatrolRow(TypedDict):
    """A row of ``patrol_days`` (ReplacingMergeTree(version): the latest state of the day wins)."""

    inspector_id: str
    day_ms: int
    grid_id: str
    street: str
    distance_m: float
    moving_s: int
    idle_s: int
    idle_periods: int
    fixes: int
    dropped: int
    cells_covered: int
    cells_assigned: int
    cells_assigned_covered: int
    first_ms: int
    last_ms: int
    version: int


def patrol_row(inspector_id: str, state: PatrolDay, registry: FieldRegistry) -> PatrolRow:
    """The day's workload so far; a stay in progress counts as idle once it is long enough."""
    stay = state["last_ms"] - state["still_since"]
    idle_ms, periods, moving_ms = state["idle_ms"], state["idle_periods"], state["moving_ms"]
    if stay >= registry.rules.idle_ms:
        idle_ms, periods = idle_ms + stay, periods + 1
    else:
        moving_ms += stay
    grid = registry.grids.get(registry.inspectors.get(inspector_id, ""))
    covered = set(state["cells"])
    return {"inspector_id": inspector_id, "day_ms": day_start_ms(date.fromisoformat(state["day"])),
            "grid_id": grid.id if grid else "", "street": grid.street if grid else "",
            "distance_m": round(state["distance_m"], 1), "moving_s": moving_ms // 1000, "idle_s": idle_ms // 1000,
            "idle_periods": periods, "fixes": state["accepted"], "dropped": state["dropped"],
            "cells_covered": len(covered), "cells_assigned": len(grid.cells) if grid else 0,
            "cells_assigned_covered": len(covered & grid.cells) if grid else 0,
            "first_ms": state["first_ms"], "last_ms": state["last_ms"], "version": state["received"]}


# ---------------------------------------------------------------- zero-reports
class StationDays(TypedDict):
    """What a station has done lately (JSON-able): its first report of each local day (epoch ms), and the
    days it was alerted for."""

    reported: dict[str, int]
    alerted: list[str]


KEEP_DAYS = 8


def mark_reported(state: StationDays | None, ts_ms: int) -> StationDays:
    """A station's item or zero-report at ``ts_ms`` (either counts for its local day — if made by the
    deadline: a report after it does not undo the alert, whenever the clock is read)."""
    day = local_day(ts_ms).isoformat()
    state = state or {"reported": {}, "alerted": []}
    if day in state["reported"] and state["reported"][day] <= ts_ms:
        return state
    reported = {**state["reported"], day: ts_ms}
    return {"reported": {d: reported[d] for d in sorted(reported)[-KEEP_DAYS:]}, "alerted": list(state["alerted"])}


class ZeroReportAlert(TypedDict):
    """An ``sla.alerts`` record (and webhook notification) for a station that did not report by its deadline."""

    alert_id: str
    case_id: str          # no case: ``ZR-<station>-<yyyymmdd>`` names the station's day
    ts_ms: int            # the deadline (so a replay stamps it the same)
    stage: str
    light: str
    kind: str
    departments: list[str]
    deadline_ms: int
    station_id: str
    community: str
    street: str


def due_alerts(stations: Iterable[Station], states: Mapping[str, StationDays], now_ms: int, deadline: time,
               is_workday: Callable[[date], bool], since_ms: int | None = None) -> list[tuple[str, ZeroReportAlert]]:
    """Alerts for working days whose deadline passed by ``now_ms`` (and, with ``since_ms``, not before it: the
    days the caller has not checked yet; without it, today and yesterday) for stations that reported neither an
    item nor a zero-report that day and were not alerted yet. Returns (station id, alert) pairs; the caller
    records each with :func:`mark_alerted`."""
    today = local_day(now_ms)
    first = local_day(since_ms) if since_ms is not None else today - timedelta(days=1)
    days = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    out: list[tuple[str, ZeroReportAlert]] = []
    for day in days:
        at = int(datetime.combine(day, deadline, tzinfo=CITY_TZ).timestamp() * 1000)
        if at > now_ms or (since_ms is not None and at <= since_ms) or not is_workday(day):
            continue
        key = day.isoformat()
        for station in sorted(stations, key=lambda s: s.id):
            state = states.get(station.id)
            if state is not None and (state["reported"].get(key, at + 1) <= at or key in state["alerted"]):
                continue
            out.append((station.id, {
                "alert_id": stable_id("zero", station.id, key), "case_id": f"ZR-{station.id}-{day:%Y%m%d}",
                "ts_ms": at, "stage": "zero_report", "light": "red", "kind": ZERO_REPORT_MISSING,
                "departments": [STREET_CENTRE], "deadline_ms": at, "station_id": station.id,
                "community": station.community, "street": station.street}))
    return out


def mark_alerted(state: StationDays | None, day: str) -> StationDays:
    state = state or {"reported": {}, "alerted": []}
    return {"reported": dict(state["reported"]), "alerted": sorted({*state["alerted"], day})[-KEEP_DAYS:]}


# ---------------------------------------------------------------- the feed of one field.tracks partition
class InspectorState(TypedDict):
    """What the changelog holds for one inspector."""

    upto: int              # offset of the last fix applied
    day: PatrolDay


class TrackCheckpoint(TypedDict):
    upto: int
    replay_from: int


class PatrolProcessor:
    """GPS fixes of one partition of field.tracks (keyed by inspector): inspector_tracks rows for every fix and
    the patrol_days row of each inspector whose day changed. Its state follows the same contract as the
    devices' (streams.core.devices.processor): states with ``upto``, a checkpoint, restore."""

    def __init__(self, city: City, registry: FieldRegistry) -> None:
        self.city = city
        self.registry = registry
        self.states: dict[str, InspectorState] = {}
        self.dirty: set[str] = set()
        self.changed: set[str] = set()     # inspectors whose row is due (flush)
        self.upto = -1
        self.restored_upto = -1
        self.late = 0                      # fixes of a day already over for their inspector

    def track_row(self, inspector_id: str, ts_ms: int, lat: float, lon: float) -> dict[str, object]:
        """A row of ``inspector_tracks``; a fix outside the district keeps an empty street."""
        location, _ = self.city.at_point(lat, lon)
        return {"inspector_id": inspector_id, "ts_ms": ts_ms, "lat": lat, "lon": lon,
                "cell": self.city.cell_of(lat, lon), "street": (location.street or "") if location else ""}

    def process(self, inspector_id: str, ts_ms: int, lat: float, lon: float, offset: int,
                rows: list[dict[str, object]]) -> None:
        """One fix at input ``offset``: its track row goes to ``rows``; the inspector's day moves on."""
        row = self.track_row(inspector_id, ts_ms, lat, lon)
        rows.append(row)
        self.upto = offset
        state = self.states.get(inspector_id)
        if state is not None and offset <= state["upto"]:
            return   # applied before a restart
        day = patrol_step(state["day"] if state else None, ts_ms, lat, lon, str(row["cell"]), self.registry.rules)
        if day is None:
            self.late += 1
            return
        self.states[inspector_id] = {"upto": offset, "day": day}
        self.dirty.add(inspector_id)
        self.changed.add(inspector_id)

    def flush(self) -> list[PatrolRow]:
        """The patrol_days rows of the inspectors whose day changed since the last flush."""
        changed, self.changed = self.changed, set()
        return [patrol_row(i, self.states[i]["day"], self.registry) for i in sorted(changed)]

    def take_dirty(self) -> dict[str, InspectorState | None]:
        dirty, self.dirty = self.dirty, set()
        return {i: self.states.get(i) for i in sorted(dirty)}

    def checkpoint(self) -> TrackCheckpoint:
        return {"upto": self.upto, "replay_from": self.upto + 1}

    def checkpointed(self, upto: int) -> None:
        """Nothing to forget: an inspector's state is its day."""

    def restore(self, checkpoint: TrackCheckpoint | None, states: Mapping[str, InspectorState]) -> int | None:
        self.states = {k: {"upto": int(v["upto"]), "day": v["day"]} for k, v in states.items() if v}
        self.dirty, self.changed = set(), set()
        if checkpoint is None:
            return None
        self.upto = self.restored_upto = int(checkpoint["upto"])
        return int(checkpoint["replay_from"])


# ---------------------------------------------------------------- zero-reports: the book the lifecycle keeps
class StationReport(TypedDict):
    """A registered station reported something (an item or a zero-report): a case.inputs record keyed by the
    station's street code, so the partition that owns the station's deadline sees it."""

    station_id: str
    ts_ms: int
    street_code: str


CHECKED_PREFIX = "~checked:"   # key of a partition's last check in the book's mapping


class ZeroReportBook:
    """Which stations reported on which days, and the alerts for those that did not by the deadline.
    ``states`` is any mutable mapping (a Faust table in the worker — written in the partition of the
    current input —, a dict in replay): station id -> StationDays, and per partition the last check."""

    def __init__(self, registry: FieldRegistry, states: MutableMapping[str, Any], deadline: time,
                 is_workday: Callable[[date], bool], unit_of: Callable[[str, str], str] | None = None) -> None:
        self.registry = registry
        self.states = states
        self.deadline = deadline
        self.is_workday = is_workday
        self.unit_of = unit_of   # (department kind, street) -> the street's instance, e.g. 徐家汇街道网格中心

    def reported(self, report: StationReport) -> None:
        station = report["station_id"]
        if station in self.registry.stations:
            self.states[station] = mark_reported(self.states.get(station), report["ts_ms"])

    def on_tick(self, now_ms: int, partition: int = 0,
                owns: Callable[[Station], bool] = lambda station: True) -> list[ZeroReportAlert]:
        """The alerts due at ``now_ms`` for the stations this partition ``owns`` (each once: recorded). The first
        tick of a partition only starts its clock: no alert for deadlines before the book was kept (the
        start of a replay, the first deployment)."""
        key = f"{CHECKED_PREFIX}{partition}"
        since = self.states.get(key)
        if since is None:
            self.states[key] = now_ms
            return []
        if now_ms <= since:
            return []
        stations = [s for s in self.registry.stations.values() if owns(s)]
        states = {s.id: self.states[s.id] for s in stations if self.states.get(s.id) is not None}
        alerts = due_alerts(stations, states, now_ms, self.deadline, self.is_workday, since)
        for station_id, alert in alerts:
            day = local_day(alert["ts_ms"]).isoformat()
            self.states[station_id] = mark_alerted(self.states.get(station_id), day)
        self.states[key] = now_ms
        return [alert for _, alert in alerts]

    def notification(self, alert: ZeroReportAlert) -> dict[str, Any]:
        """The department notification (webhook) of an alert: to the station's street centre."""
        unit = self.unit_of(STREET_CENTRE, alert["street"]) if self.unit_of else STREET_CENTRE
        return {"kind": ZERO_REPORT_MISSING, "case_id": alert["case_id"], "ts_ms": alert["ts_ms"],
                "departments": [STREET_CENTRE], "units": [unit], "category_code": "",
                "category_name": f"零报告缺报 {alert['community']}居民区工作站 {alert['station_id']}", "level": 3,
                "deadline_ms": alert["deadline_ms"], "address": None, "lat": None, "lon": None, "cell": None,
                "street": alert["street"], "event_id": alert["alert_id"]}
