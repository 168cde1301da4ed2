"""Crowd response plans 三级响应预案: a crowd case follows the head count up at once and down with hysteresis.

The KB gives each camera area three levels — 3 关注 (attention), 2 预警 (warning), 1 管控 (control) — with the
counts that call for them (``crowd_levels``) and, per level, the actions and the departments that carry them out
(``crowd_plans``: security forces 安防力量, checkpoints 启动卡口, diversion 分流). As counts rise the case takes the
level the count calls for at once; as they fall it steps down only once the count has stayed below
``step_down_ratio`` × the current level's threshold for ``step_down_minutes`` (a crowd hovering at a threshold
does not flap), to the level the count then calls for — or stands down altogether below the attention level (the
KB's condition has cleared). Every change is a case event and a notification to the departments of the level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

Change = Literal["up", "down", "clear"]
LEVEL_NAMES = {3: "关注", 2: "预警", 1: "管控"}


@dataclass(frozen=True)
class PlanLevel:
    level: int                      # 3 关注, 2 预警, 1 管控
    name: str
    actions: tuple[str, ...]        # e.g. 增派安保力量, 启动卡口, 分流
    departments: tuple[str, ...]    # who carries them out (department kinds of the directory)


@dataclass(frozen=True)
class CrowdPlan:
    area: str
    thresholds: tuple[int, int, int]  # counts for levels 3, 2, 1
    levels: dict[int, PlanLevel]
    step_down_ratio: float
    step_down_ms: int

    def implied(self, count: int) -> int | None:
        """The level a head count calls for (None: below the attention level)."""
        low, mid, high = self.thresholds
        if count >= high:
            return 1
        if count >= mid:
            return 2
        if count >= low:
            return 3
        return None

    def threshold(self, level: int) -> int:
        return self.thresholds[3 - level]


class CrowdState(TypedDict):
    """A crowd case's plan state (JSON, in the case document)."""

    area: str
    count: int
    level: int | None        # the plan level in force; None: stood down
    low_since: int | None    # since when the count has been below the step-down mark of the level
    last_ms: int             # newest count applied (older ones are ignored)


def start(plan: CrowdPlan, count: int, ts_ms: int) -> CrowdState:
    return {"area": plan.area, "count": count, "level": plan.implied(count), "low_since": None, "last_ms": ts_ms}


def step(state: CrowdState, plan: CrowdPlan, count: int, ts_ms: int) -> tuple[CrowdState, Change | None]:
    """One head count. Returns the new state and the change of plan level, if any. Never mutates ``state``."""
    if ts_ms < state["last_ms"]:
        return state, None
    new: CrowdState = {**state, "count": count, "last_ms": ts_ms}
    implied, level = plan.implied(count), state["level"]
    if implied is not None and (level is None or implied < level):
        new["level"], new["low_since"] = implied, None
        return new, "up"
    if level is None:
        return new, None
    if count >= plan.step_down_ratio * plan.threshold(level):
        new["low_since"] = None
        return new, None
    low_since = state["low_since"] if state["low_since"] is not None else ts_ms
    new["low_since"] = low_since
    if ts_ms - low_since < plan.step_down_ms:
        return new, None
    new["level"], new["low_since"] = implied, None
    return new, ("clear" if implied is None else "down")


def step_down_by_action(state: CrowdState) -> tuple[CrowdState, Change]:
    """The centre steps the plan down one level (from 关注: stands it down)."""
    level = state["level"]
    lower = None if level is None or level >= 3 else level + 1
    return {**state, "level": lower, "low_since": None}, ("clear" if lower is None else "down")
