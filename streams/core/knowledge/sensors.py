"""Devices of the city: heritage-building sensors (vibration, tilt), lift e-bike detectors and street
cameras (the registry lives in streams.core.devices.registry), the lift command, crowd levels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from streams.core.devices.registry import (
    METRIC_EBIKE,
    METRIC_TILT,
    METRIC_VIBRATION,
    THRESHOLD_METRICS,
    AlarmLimits,
    Camera,
    DeviceRegistry,
    Lift,
    ProtectionClass,
    Sensor,
)

__all__ = ["METRIC_EBIKE", "METRIC_TILT", "METRIC_VIBRATION", "THRESHOLD_METRICS", "AlarmLimits", "Camera",
           "DeviceRegistry", "Lift", "ProtectionClass", "Sensor", "EBIKE_COMMAND", "CITY_TZ", "city_day",
           "LiftRepeatState", "LiftStateDict", "crowd_level"]

from streams.core.times import CITY_TZ

EBIKE_COMMAND = "broadcast:ebike_dissuasion"  # the lift's pre-recorded 劝阻 announcement


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
