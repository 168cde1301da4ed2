"""Alarm episodes with hysteresis, and the lift e-bike repeat counter: the per-device state machines.

An **episode** of one sensor metric opens when a reading exceeds the threshold and closes once the value
has stayed at or below the clear level (``clear_ratio`` × threshold, per protection class) for the clear
period: a reading at or below the clear level starts the quiet clock, a reading above it stops it, and
the first reading that finds the clock at least ``clear_ms`` old closes the episode at its own time. A
building that hovers around its threshold stays in one episode (one signal, one case) instead of raising
an alarm per reading. Readings older than the newest one applied (out of order on the wire) only raise the
peak; they never move the clock. A device that falls silent keeps its episode open: silence is not calm.

Both machines are plain functions over JSON-able state, so the state can sit in a changelog and a replay
from any point reaches the same state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from streams.core.devices.registry import AlarmLimits


class OpenEpisode(TypedDict):
    """The state of an open episode (JSON-able)."""

    id: str
    opened_ms: int
    peak: float
    peak_ms: int
    below_ms: int | None   # since when every reading has been at or below the clear level; None: not quiet
    last_ms: int           # newest reading applied


@dataclass(frozen=True, slots=True)
class EpisodeChange:
    """An episode opened or closed by a reading."""

    kind: Literal["opened", "closed"]
    episode_id: str
    opened_ms: int
    closed_ms: int         # 0 while open
    peak: float
    peak_ms: int
    value: float           # the reading that opened or closed it
    ts_ms: int

    @property
    def duration_ms(self) -> int:
        return self.closed_ms - self.opened_ms if self.closed_ms else 0


def episode_step(state: OpenEpisode | None, ts_ms: int, value: float, limits: AlarmLimits,
                 episode_id: str) -> tuple[OpenEpisode | None, EpisodeChange | None]:
    """One reading of one sensor metric. ``episode_id`` names the episode this reading would open.
    Returns the new state (None: no episode open) and the change, if any. Never mutates ``state``."""
    if state is None:
        if value > limits.threshold:
            opened: OpenEpisode = {"id": episode_id, "opened_ms": ts_ms, "peak": value, "peak_ms": ts_ms,
                                   "below_ms": None, "last_ms": ts_ms}
            return opened, EpisodeChange("opened", episode_id, ts_ms, 0, value, ts_ms, value, ts_ms)
        return None, None
    new: OpenEpisode = dict(state)  # type: ignore[assignment]
    if value > new["peak"]:
        new["peak"], new["peak_ms"] = value, ts_ms
    if ts_ms < state["last_ms"]:
        return new, None   # out of order: the peak counts, the quiet clock does not move
    new["last_ms"] = ts_ms
    if value > limits.clear_level:
        new["below_ms"] = None
        return new, None
    below = new["below_ms"]
    if below is None:
        below = new["below_ms"] = ts_ms
    if ts_ms - below >= limits.clear_ms:
        return None, EpisodeChange("closed", new["id"], new["opened_ms"], ts_ms, new["peak"], new["peak_ms"],
                                   value, ts_ms)
    return new, None


def lift_step(days: dict[str, list[int]], day: str, ts_ms: int, keep_days: int = 2) -> tuple[dict[str, list[int]], int]:
    """One e-bike detection of one lift on its local ``day``: (new state, the lift's count that day).
    Detections are kept as event times, so a re-delivered reading is not counted twice; only the newest
    ``keep_days`` days are kept (a late detection counts on its own day while that day is kept)."""
    new = {d: list(times) for d, times in days.items()}
    times = new.setdefault(day, [])
    if ts_ms not in times:
        times.append(ts_ms)
    for old in sorted(new)[:-keep_days]:
        del new[old]
    return new, len(new.get(day, []))
