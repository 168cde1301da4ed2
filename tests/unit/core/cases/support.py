"""Helpers for the lifecycle tests: a small knowledge-base double with the sample city's routing
(the rows of streams/data/kb.yaml the tests need), and builders for signals and actions."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from streams.core.cases import dedup
from streams.core.model import Location, Signal

TZ = ZoneInfo("Asia/Shanghai")

WORK_H = "work_hours"
WORK_D = "work_days"
CAL_D = "calendar_days"
EMERG = "emergency_hours"

PROFILES = {
    "standard": {"register": (WORK_H, 120), "dispatch": (WORK_H, 120), "handle": (WORK_D, 3 * 1440),
                 "verify": (WORK_D, 1440)},
    "quick": {"register": (WORK_H, 60), "dispatch": (WORK_H, 60), "handle": (WORK_H, 240), "verify": (WORK_H, 240)},
    "housing": {"register": (WORK_H, 240), "dispatch": (WORK_H, 240), "handle": (WORK_D, 5 * 1440),
                "verify": (WORK_D, 2 * 1440)},
    "community": {"register": (WORK_D, 1440), "dispatch": (WORK_D, 1440), "handle": (CAL_D, 7 * 1440),
                  "verify": (WORK_D, 2 * 1440)},
    "emergency": {"register": (EMERG, 10), "dispatch": (EMERG, 10), "handle": (EMERG, 120), "verify": (EMERG, 720)},
}

# category name -> (code, rules [(when, departments, level, profile, immediate, escalate_on_red)])
CATEGORIES = {
    "群租": ("E0501", [({"committee"}, ["房管办"], 3, "housing", True, False),
                       (set(), ["房管办"], 3, "housing", False, False)]),
    "私装地锁": ("E0502", [(set(), ["居民区工作站"], 4, "community", False, False)]),
    "损坏房屋承重结构": ("E0503", [(set(), ["物业公司", "房管办"], 3, "emergency", True, True)]),
    "占道经营": ("E0501X", [(set(), ["城管执法中队"], 3, "quick", False, False)]),
    "无照经营": ("E0502X", [(set(), ["城管执法中队"], 3, "standard", False, False)]),
    "暴露垃圾": ("E0101", [(set(), ["绿化市容所"], 3, "quick", False, False)]),
    "历史建筑振动超限": ("E0601", [(set(), ["街道管理办", "房管办"], 3, "emergency", True, True)]),
}


@dataclass
class FakeRoute:
    departments: list[str]
    level: int
    stage_limits: dict[str, tuple[str, int]]
    escalate_on_red: bool
    immediate: bool
    kb_version: str
    rule_id: str


@dataclass
class FakeCategory:
    code: str
    name: str


# The dedup rules these tests rely on (the real ones are the KB's `merge` section).
MERGE_RULES = dedup.MergeRules(
    default=dedup.MergeRule(80.0, dedup.DAY_MS),
    by_category={"群租": dedup.MergeRule(30.0, 30 * dedup.DAY_MS), "暴露垃圾": dedup.MergeRule(50.0, 6 * dedup.HOUR_MS),
                 "占道经营": dedup.MergeRule(100.0, 12 * dedup.HOUR_MS)},
    groups=(frozenset({"占道经营", "无照经营", "跨门经营"}),))


@dataclass
class KnowledgeDouble:
    """Implements the members of Knowledge the engine uses: version, merge_rules, route(), category()."""

    version: str = "test-kb-1"
    merge_rules: dedup.MergeRules = MERGE_RULES
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def category(self, code_or_name: str) -> FakeCategory | None:
        for name, (code, _) in CATEGORIES.items():
            if code_or_name in (name, code):
                return FakeCategory(code, name)
        return None

    def route(self, category_code: str, context, location: Location | None = None) -> FakeRoute:
        ctx = set(context)
        self.calls.append((category_code, tuple(sorted(ctx))))
        category = self.category(category_code)
        if category is None:
            raise KeyError(f"no rule for category {category_code}")
        for i, (when, departments, level, profile, immediate, escalate) in enumerate(CATEGORIES[category.name][1]):
            if when <= ctx:
                return FakeRoute(list(departments), level, dict(PROFILES[profile]), escalate, immediate,
                                 self.version, f"{category.name}-{i}")
        raise AssertionError("every category has a default rule")


def ms(text: str) -> int:
    """'2016-03-23 15:53' (Shanghai local) -> epoch ms."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=TZ).timestamp() * 1000)


def iso(text: str) -> str:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=TZ).isoformat()


_ids = itertools.count(1)


def signal(category: str, when: str, source_kind: str = "12345", *, lat: float | None = 31.1700,
           lon: float | None = 121.4120, address: str | None = "钦江路15号", cell: str | None = None,
           reporter_id: str | None = None, source_id: str | None = None, context: list[str] | None = None,
           **kw) -> Signal:
    code = CATEGORIES[category][0]
    n = next(_ids)
    source_id = source_id or f"{source_kind}-{n}"
    source = {"12345": "hotline", "12319": "hotline", "camera": "camera", "sensor": "iot",
              "registry": "registry"}.get(source_kind, "field")
    return Signal(signal_id=f"sig-{source_id}", source=source, source_kind=source_kind, source_id=source_id,
                  ts_ms=ms(when), ingest_ms=ms(when), category_code=code, category_name=category, confidence=0.9,
                  context=list(context or []), lat=lat, lon=lon, cell=cell, community="怡桂苑", street="虹梅街道",
                  street_code="310104013", district="徐汇区", address=address,
                  reporter_id=reporter_id or f"r-{n}", reporter_kind=source_kind, **kw)


def action(case_id: str, name: str, when: str, actor_kind: str, actor_id: str, **kw) -> dict:
    return {"action_id": f"a-{next(_ids)}", "ts": iso(when), "case_id": case_id, "source_id": None,
            "actor_kind": actor_kind, "actor_id": actor_id, "action": name, "note": kw.pop("note", None),
            "photos": kw.pop("photos", None), "extend_minutes": kw.pop("extend_minutes", None),
            "departments": kw.pop("departments", None), **kw}
