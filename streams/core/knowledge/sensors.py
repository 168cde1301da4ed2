"""Devices of the sample city: heritage-building sensors (vibration, tilt), lift e-bike detectors
and street cameras; their thresholds; and the per-lift repeat counter the Ingestor keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from streams.core.knowledge.taxonomy import DataError, load_marked_yaml, validate_marked
from streams.core.model import Location

if TYPE_CHECKING:
    from streams.core.knowledge.geo import City

METRIC_VIBRATION = "vibration_mm_s"   # peak particle velocity, mm/s
METRIC_TILT = "tilt_permille"         # tilt, ‰
METRIC_EBIKE = "ebike_detected"       # 1 = an e-bike was seen entering the lift car
THRESHOLD_METRICS = (METRIC_VIBRATION, METRIC_TILT)
CITY_TZ = timezone(timedelta(hours=8))  # Asia/Shanghai has no DST
EBIKE_COMMAND = "broadcast:ebike_dissuasion"  # the lift's pre-recorded 劝阻 announcement


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ThresholdsIn(_Strict):
    vibration_mm_s: float | None = Field(None, gt=0)
    tilt_permille: float | None = Field(None, gt=0)


class _SensorIn(_Strict):
    id: str
    building: str
    address: str
    at: tuple[float, float]
    protection_class: str
    metrics: list[str] = Field(min_length=1)
    thresholds: _ThresholdsIn | None = None


class _LiftIn(_Strict):
    id: str
    building: str
    address: str
    at: tuple[float, float]


class _CameraIn(_Strict):
    id: str
    area: str | None = None
    address: str
    at: tuple[float, float]


class _DevicesIn(_Strict):
    protection_classes: dict[str, _ThresholdsIn] = Field(min_length=1)
    sensors: list[_SensorIn] = []
    lifts: list[_LiftIn] = []
    cameras: list[_CameraIn] = []


@dataclass(frozen=True)
class Sensor:
    id: str
    building: str
    protection_class: str
    thresholds: dict[str, float]    # metric -> limit
    location: Location


@dataclass(frozen=True)
class Lift:
    id: str
    building: str
    location: Location


@dataclass(frozen=True)
class Camera:
    id: str
    area: str | None
    location: Location


@dataclass
class DeviceRegistry:
    sensors: dict[str, Sensor]
    lifts: dict[str, Lift]
    cameras: dict[str, Camera]
    protection_classes: dict[str, dict[str, float]]

    @classmethod
    def load(cls, path: Path, city: City) -> DeviceRegistry:
        raw = load_marked_yaml(path)
        data = validate_marked(_DevicesIn, raw, path)
        classes = {name: {k: v for k, v in t.model_dump().items() if v is not None}
                   for name, t in data.protection_classes.items()}
        seen: set[str] = set()

        def place(section: str, i: int, device_id: str, address: str, at: tuple[float, float]) -> Location:
            line = raw[section].item_lines[i]
            if device_id in seen:
                raise DataError(path, line, f"{section}[{i}].id", f"duplicate device id {device_id!r}")
            seen.add(device_id)
            loc, reason = city.locate(at[0], at[1], address)
            if loc is None:
                raise DataError(path, line, f"{section}[{i}].address", reason or "cannot be located")
            # the device's own coordinates are more precise than an interpolated door number
            loc.lat, loc.lon = at
            return loc

        sensors: dict[str, Sensor] = {}
        for i, s in enumerate(data.sensors):
            loc = place("sensors", i, s.id, s.address, s.at)
            line = raw["sensors"].item_lines[i]
            if s.protection_class not in classes:
                raise DataError(path, line, f"sensors[{i}].protection_class", f"unknown class {s.protection_class!r}")
            thresholds = dict(classes[s.protection_class])
            if s.thresholds:
                thresholds.update({k: v for k, v in s.thresholds.model_dump().items() if v is not None})
            for metric in s.metrics:
                if metric not in THRESHOLD_METRICS:
                    raise DataError(path, line, f"sensors[{i}].metrics", f"unknown metric {metric!r}")
                if metric not in thresholds:
                    raise DataError(path, line, f"sensors[{i}].thresholds", f"no threshold for {metric}")
            sensors[s.id] = Sensor(s.id, s.building, s.protection_class,
                                   {m: thresholds[m] for m in s.metrics}, loc)
        lifts = {lift.id: Lift(lift.id, lift.building, place("lifts", i, lift.id, lift.address, lift.at))
                 for i, lift in enumerate(data.lifts)}
        cameras = {c.id: Camera(c.id, c.area, place("cameras", i, c.id, c.address, c.at))
                   for i, c in enumerate(data.cameras)}
        return cls(sensors, lifts, cameras, classes)


def city_day(ts_ms: int) -> str:
    """The local (Shanghai) calendar day of an event time, e.g. '2026-11-22'."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=CITY_TZ).date().isoformat()


class LiftStateDict(TypedDict, total=False):
    """LiftRepeatState as JSON (what the worker persists; older states may lack keys)."""

    seen: dict[str, dict[str, list[int]]]
    keep_days: int


@dataclass
class LiftRepeatState:
    """E-bike detections per lift per local day, as event times so a re-delivered reading is not
    counted twice. Plain JSON-able so the worker can persist it."""

    seen: dict[str, dict[str, list[int]]] = field(default_factory=dict)   # day -> lift id -> event ms
    keep_days: int = 2

    def record(self, lift_id: str, ts_ms: int) -> int:
        """Count one detection; returns the lift's count for that day (late records count on their own day)."""
        day = city_day(ts_ms)
        times = self.seen.setdefault(day, {}).setdefault(lift_id, [])
        if ts_ms not in times:
            times.append(ts_ms)
        for old in sorted(self.seen)[:-self.keep_days]:
            del self.seen[old]
        return len(times)

    def count(self, lift_id: str, day: str) -> int:
        return len(self.seen.get(day, {}).get(lift_id, []))

    def to_dict(self) -> LiftStateDict:
        return {"seen": {d: {k: list(v) for k, v in lifts.items()} for d, lifts in self.seen.items()},
                "keep_days": self.keep_days}

    @classmethod
    def from_dict(cls, data: LiftStateDict) -> LiftRepeatState:
        return cls({d: {k: [int(x) for x in v] for k, v in lifts.items()} for d, lifts in data.get("seen", {}).items()},
                   int(data.get("keep_days", 2)))


def crowd_level(count: int, thresholds: tuple[int, int, int]) -> int | None:
    """Three response levels for a crowd count: 3 关注 (attention), 2 预警 (warning), 1 管控 (control)."""
    low, mid, high = thresholds
    if count >= high:
        return 1
    if count >= mid:
        return 2
    if count >= low:
        return 3
    return None
