"""The knowledge base (责任清单): what a report is, where it is and who must handle it.

`Knowledge.load` reads the taxonomy, the sample city (grid, gazetteer, departments, components,
devices), the versioned KB and the corpus, validates them (errors name file, line and field)
and trains the text classifier (cached per process: the same corpus trains the same model).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from streams.core.cases.authority import ActorPolicy, PolicyError, parse_policy
from streams.core.cases.crowd import CrowdPlan, PlanLevel
from streams.core.cases.dedup import NO_RULES, MergeRule, MergeRules
from streams.core.cases.lifecycle import ACTIONS, OPEN_STAGES
from streams.core.field import FieldRegistry
from streams.core.knowledge.classify import Classification, TextClassifier, load_corpus
from streams.core.knowledge.geo import City
from streams.core.knowledge.sensors import DeviceRegistry
from streams.core.knowledge.taxonomy import (
    Category,
    DataError,
    Loc,
    Taxonomy,
    field_path,
    line_of,
    load_marked_yaml,
    validate_marked,
)
from streams.core.model import CTX_COMPOUND, CTX_DECIBEL, CTX_HERITAGE, CTX_STALL, CTX_STREET_FRONT, LEVELS, Location

DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # the packaged sample city
CTX_COMMITTEE = "committee"   # reported by a residents' committee 居委会 (e.g. 群租: dispatch at once)
CONTEXT_FLAGS = (CTX_COMPOUND, CTX_STREET_FRONT, CTX_STALL, CTX_HERITAGE, CTX_DECIBEL, CTX_COMMITTEE)
CLOCKS = ("emergency_hours", "work_hours", "work_days", "calendar_days")
LIMIT_STAGES = ("register", "dispatch", "handle", "verify", "close")
_LIMIT_RE = re.compile(r"^\s*(\d+)\s*(m|h|d)\s+(\w+)\s*$")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}
# Dedup rules (the KB's `merge` section): a radius in metres or kilometres, a window of calendar time.
_RADIUS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|km)\s*$")
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*(m|h|d)\s*$")
MAX_MERGE_RADIUS_M = 2000.0      # beyond a street's width of reports, different problems merge
MAX_MERGE_WINDOW_DAYS = 365


# ---------------------------------------------------------------- file schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RuleIn(_Strict):
    id: str = Field(min_length=1)
    category: str
    when: list[str] = []
    departments: list[str] = Field(min_length=1)
    level: int = Field(ge=1, le=4)
    limits: str | dict[str, str]
    immediate: bool = False
    escalate_on_red: bool = False
    add_when: dict[str, list[str]] = {}
    owner_component: str | None = None


class _MergeRuleIn(_Strict):
    radius: str
    window: str


class _MergeIn(_Strict):
    default: _MergeRuleIn
    rules: dict[str, _MergeRuleIn] = {}
    compatible: list[list[str]] = []


class _CameraTypeIn(_Strict):
    category: str
    min_confidence: float = Field(ge=0, le=1)


class _CrowdIn(_Strict):
    default: tuple[int, int, int]
    areas: dict[str, tuple[int, int, int]] = {}


class _PlanLevelIn(_Strict):
    name: str = Field(min_length=1)
    actions: list[str] = Field(min_length=1)
    departments: list[str] = Field(min_length=1)


class _CrowdPlansIn(_Strict):
    step_down_ratio: float = Field(0.8, gt=0, le=1)
    step_down_minutes: float = Field(10, ge=0)
    default: dict[int, _PlanLevelIn]
    areas: dict[str, dict[int, _PlanLevelIn]] = {}


class _KbIn(_Strict):
    version: str = Field(min_length=1)
    limits: dict[str, dict[str, str]]
    rules: list[_RuleIn] = Field(min_length=1)
    keywords: dict[str, list[str]] = {}
    context_cues: dict[str, list[str]] = {}
    camera_types: dict[str, _CameraTypeIn] = {}
    crowd_levels: _CrowdIn
    ebike_repeat_per_day: int = Field(3, ge=1)
    merge: _MergeIn | None = None
    crowd_plans: _CrowdPlansIn | None = None
    authority: dict[str, Any] | None = None   # validated by streams.core.cases.authority


# ---------------------------------------------------------------- results
@dataclass
class Route:
    departments: list[str]                       # primary first, names from the department directory
    level: int                                   # 4 居民区工作站, 3 街道网格中心, 2 区网格中心, 1 市级
    stage_limits: dict[str, tuple[str, int]]     # stage -> (clock, minutes of that clock)
    escalate_on_red: bool
    immediate: bool                              # dispatch at once, no centre review
    kb_version: str
    rule_id: str
    # the instances serving the case's place, parallel to departments (徐家汇街道城管中队 for 城管执法中队);
    # the kind's own name where the place has none
    units: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.departments[0]


@dataclass(frozen=True)
class Rule:
    id: str
    category_code: str
    when: frozenset[str]
    departments: tuple[str, ...]
    level: int
    limits: dict[str, tuple[str, int]]
    immediate: bool
    escalate_on_red: bool
    add_when: dict[str, tuple[str, ...]]
    owner_component: str | None
    line: int


@dataclass(frozen=True)
class CameraType:
    category_code: str
    min_confidence: float


@dataclass
class KnowledgeBase:
    version: str
    rules: dict[str, list[Rule]]               # category code -> rules in file order
    keywords: dict[str, list[str]]
    context_cues: dict[str, list[str]]
    camera_types: dict[str, CameraType]
    crowd_default: tuple[int, int, int]
    crowd_areas: dict[str, tuple[int, int, int]]
    ebike_repeat_per_day: int
    path: Path = field(default=Path())
    merge_rules: MergeRules = NO_RULES
    policy: ActorPolicy | None = None           # who may take which action (the authority section)
    crowd_plans: dict[str, CrowdPlan] = field(default_factory=dict)   # camera area ('' = default) -> plan

    @classmethod
    def load(cls, path: Path, taxonomy: Taxonomy, city: City) -> KnowledgeBase:
        raw = load_marked_yaml(path)
        data = validate_marked(_KbIn, raw, path)

        def err(loc: Loc, problem: str) -> DataError:
            return DataError(path, line_of(raw, loc), field_path(loc), problem)

        def parse_limits(spec: dict[str, str], loc: Loc) -> dict[str, tuple[str, int]]:
            out: dict[str, tuple[str, int]] = {}
            for stage, text in spec.items():
                if stage not in LIMIT_STAGES:
                    raise err(loc + (stage,), f"unknown stage {stage!r} (one of {', '.join(LIMIT_STAGES)})")
                m = _LIMIT_RE.match(text)
                if not m:
                    raise err(loc + (stage,), f"{text!r} is not '<amount><m|h|d> <clock>'")
                if m.group(3) not in CLOCKS:
                    raise err(loc + (stage,), f"unknown clock {m.group(3)!r} (one of {', '.join(CLOCKS)})")
                out[stage] = (m.group(3), int(m.group(1)) * _UNIT_MINUTES[m.group(2)])
            return out

        profiles = {name: parse_limits(spec, ("limits", name)) for name, spec in data.limits.items()}

        def category_code(name: str, loc: Loc) -> str:
            cat = taxonomy.get(name)
            if cat is None:
                raise err(loc, f"unknown category {name!r}")
            return cat.code

        def department(name: str, loc: Loc) -> str:
            if name not in city.departments:
                raise err(loc, f"unknown department {name!r} (not in the department directory)")
            return name

        rules: dict[str, list[Rule]] = {}
        seen: set[str] = set()
        for i, r in enumerate(data.rules):
            loc: Loc = ("rules", i)
            if r.id in seen:
                raise err(loc + ("id",), f"duplicate rule id {r.id!r}")
            seen.add(r.id)
            code = category_code(r.category, loc + ("category",))
            for j, flag in enumerate(r.when):
                if flag not in CONTEXT_FLAGS:
                    raise err(loc + ("when", j), f"unknown context flag {flag!r} (one of {', '.join(CONTEXT_FLAGS)})")
            depts = tuple(department(d, loc + ("departments", j)) for j, d in enumerate(r.departments))
            if len(set(depts)) != len(depts):
                raise err(loc + ("departments",), "a department is listed twice")
            if isinstance(r.limits, str):
                if r.limits not in profiles:
                    raise err(loc + ("limits",), f"unknown limits profile {r.limits!r}")
                limits = profiles[r.limits]
            else:
                limits = parse_limits(r.limits, loc + ("limits",))
            add_when: dict[str, tuple[str, ...]] = {}
            for flag, names in r.add_when.items():
                if flag not in CONTEXT_FLAGS:
                    raise err(loc + ("add_when", flag), f"unknown context flag {flag!r}")
                add_when[flag] = tuple(department(d, loc + ("add_when", flag, j)) for j, d in enumerate(names))
            if r.owner_component and r.owner_component not in {c.kind for c in city.components}:
                raise err(loc + ("owner_component",), f"no component of kind {r.owner_component!r} in the registry")
            rules.setdefault(code, []).append(Rule(r.id, code, frozenset(r.when), depts, r.level, limits,
                                                   r.immediate, r.escalate_on_red, add_when, r.owner_component,
                                                   raw["rules"].item_lines[i]))
        for cat in taxonomy:
            if not any(not rule.when for rule in rules.get(cat.code, [])):
                line = rules[cat.code][0].line if cat.code in rules else raw["rules"].line
                raise DataError(path, line, "rules",
                                f"category {cat.name} ({cat.code}) has no default rule (one without 'when')")

        keywords = {}
        for name, words in data.keywords.items():
            keywords[taxonomy.by_code[category_code(name, ("keywords", name))].name] = words
        for flag in data.context_cues:
            if flag not in CONTEXT_FLAGS:
                raise err(("context_cues", flag), f"unknown context flag {flag!r}")
        cameras = {t: CameraType(category_code(c.category, ("camera_types", t, "category")), c.min_confidence)
                   for t, c in data.camera_types.items()}
        crowd_levels: list[tuple[Loc, tuple[int, int, int]]] = [
            (("crowd_levels", "default"), data.crowd_levels.default),
            *((("crowd_levels", "areas", a), v) for a, v in data.crowd_levels.areas.items())]
        for where, levels in crowd_levels:
            if not levels[0] < levels[1] < levels[2]:
                raise err(where, f"crowd thresholds must increase, got {list(levels)}")
        merge_rules = _merge_rules(data.merge, taxonomy, err) if data.merge else NO_RULES
        if data.authority is None:
            policy = packaged_policy()   # a KB without its own section uses the packaged sample city's
        else:
            try:
                policy = parse_policy(data.authority, ACTIONS, OPEN_STAGES)
            except PolicyError as exc:
                loc = ("authority",) + exc.loc
                raise DataError(path, line_of(raw, loc), field_path(loc), exc.problem) from None
        plans = _crowd_plans(data, department, err) if data.crowd_plans else {}
        return cls(data.version, rules, keywords, data.context_cues, cameras, data.crowd_levels.default,
                   dict(data.crowd_levels.areas), data.ebike_repeat_per_day, path, merge_rules, policy, plans)


_PACKAGED_POLICY: list[ActorPolicy] = []


def packaged_policy() -> ActorPolicy:
    """The authority section of the packaged sample city's KB (read once): the engine's policy when
    it is given a knowledge object without one (test doubles)."""
    if not _PACKAGED_POLICY:
        import yaml

        data = yaml.safe_load((DATA_DIR / "kb.yaml").read_text(encoding="utf-8"))
        _PACKAGED_POLICY.append(parse_policy(data["authority"], ACTIONS, OPEN_STAGES))
    return _PACKAGED_POLICY[0]


def _crowd_plans(data: _KbIn, department: Callable[[str, Loc], str],
                 err: Callable[[Loc, str], DataError]) -> dict[str, CrowdPlan]:
    """The KB's `crowd_plans`: per camera area ('' = default) the three levels with actions and departments."""
    spec = data.crowd_plans
    assert spec is not None

    def levels(given: dict[int, _PlanLevelIn], loc: Loc) -> dict[int, PlanLevel]:
        out: dict[int, PlanLevel] = {}
        for level, item in given.items():
            if level not in (1, 2, 3):
                raise err(loc + (level,), f"plan level {level} is not 3 关注, 2 预警 or 1 管控")
            departments = tuple(department(d, loc + (level, "departments", j)) for j, d in enumerate(item.departments))
            out[level] = PlanLevel(level, item.name, tuple(item.actions), departments)
        return out

    default = levels(spec.default, ("crowd_plans", "default"))
    if set(default) != {1, 2, 3}:
        raise err(("crowd_plans", "default"), "the default plan needs levels 3, 2 and 1")
    step_ms = int(spec.step_down_minutes * 60_000)
    plans = {"": CrowdPlan("", data.crowd_levels.default, default, spec.step_down_ratio, step_ms)}
    for area in {*data.crowd_levels.areas, *spec.areas}:
        own = levels(spec.areas.get(area, {}), ("crowd_plans", "areas", area))
        plans[area] = CrowdPlan(area, data.crowd_levels.areas.get(area, data.crowd_levels.default),
                                {**default, **own}, spec.step_down_ratio, step_ms)
    return plans



def _merge_rules(spec: _MergeIn, taxonomy: Taxonomy, err: Callable[[Loc, str], DataError]) -> MergeRules:
    """The KB's `merge` section: dedup radius and window per category, compatible-category groups."""

    def rule(r: _MergeRuleIn, loc: Loc) -> MergeRule:
        m = _RADIUS_RE.match(r.radius)
        if not m:
            raise err(loc + ("radius",), f"{r.radius!r} is not '<number>m' or '<number>km'")
        radius = float(m.group(1)) * (1000 if m.group(2) == "km" else 1)
        if not 1 <= radius <= MAX_MERGE_RADIUS_M:
            raise err(loc + ("radius",), f"radius {radius:g} m is outside 1..{MAX_MERGE_RADIUS_M:g} m")
        w = _WINDOW_RE.match(r.window)
        if not w:
            raise err(loc + ("window",), f"{r.window!r} is not '<amount><m|h|d>'")
        minutes = int(w.group(1)) * _UNIT_MINUTES[w.group(2)]
        if not 1 <= minutes <= MAX_MERGE_WINDOW_DAYS * 1440:
            raise err(loc + ("window",), f"window {r.window!r} is outside 1 minute..{MAX_MERGE_WINDOW_DAYS} days")
        return MergeRule(radius, minutes * 60_000)

    def name_of(name: str, loc: Loc) -> str:
        category = taxonomy.get(name)
        if category is None:
            raise err(loc, f"unknown category {name!r}")
        return category.name

    by_category: dict[str, MergeRule] = {}
    for name, r in spec.rules.items():
        canonical = name_of(name, ("merge", "rules", name))
        if canonical in by_category:
            raise err(("merge", "rules", name), f"{canonical} has two rules")
        by_category[canonical] = rule(r, ("merge", "rules", name))
    groups: list[frozenset[str]] = []
    grouped: dict[str, int] = {}
    for i, members in enumerate(spec.compatible):
        names = [name_of(n, ("merge", "compatible", i, j)) for j, n in enumerate(members)]
        if len(set(names)) < 2:
            raise err(("merge", "compatible", i), "a compatible group needs at least two different categories")
        for j, n in enumerate(names):
            if n in grouped:
                raise err(("merge", "compatible", i, j), f"{n} is already in compatible group {grouped[n]}")
            grouped[n] = i
        groups.append(frozenset(names))
    return MergeRules(rule(spec.default, ("merge", "default")), by_category, tuple(groups))


# ---------------------------------------------------------------- the facade
class SamplePlace(TypedDict):
    """A gazetteer address the locator is sure to find (for the simulator and the demo)."""

    address: str
    lat: float
    lon: float


class SampleDevice(TypedDict):
    """A device and one metric it reports (for the simulator and the demo)."""

    device_id: str
    metric: str
    building: str
    threshold: NotRequired[float]  # heritage sensors only


_MODEL_CACHE: dict[str, TextClassifier] = {}
_MODEL_LOCK = threading.Lock()


def _classifier(taxonomy: Taxonomy, corpus_dir: Path, kb: KnowledgeBase) -> TextClassifier:
    """Train once per process for a given corpus + rules (training is deterministic)."""
    digest = hashlib.sha256()
    for path in sorted(corpus_dir.glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    kb_inputs = [kb.keywords, kb.context_cues, taxonomy.version]
    digest.update(json.dumps(kb_inputs, sort_keys=True, ensure_ascii=False).encode())
    key = digest.hexdigest()
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            examples = load_corpus(corpus_dir, taxonomy)
            _MODEL_CACHE[key] = TextClassifier(taxonomy, examples, kb.keywords, kb.context_cues)
        return _MODEL_CACHE[key]


class Knowledge:
    """Taxonomy + city + 责任清单 + classifier: the read-only knowledge every stage consults."""

    def __init__(self, taxonomy: Taxonomy, city: City, kb: KnowledgeBase, devices: DeviceRegistry,
                 classifier: TextClassifier, corpus_dir: Path = DATA_DIR / "corpus",
                 field_registry: FieldRegistry | None = None) -> None:
        self.corpus_dir = corpus_dir   # the corpus the classifier was trained on
        # grids 责任网格, inspectors and residential stations (field.yaml)
        self.field = field_registry or FieldRegistry.empty()
        self.taxonomy = taxonomy
        self.city = city
        self.kb = kb
        self.devices = devices
        self.classifier = classifier
        self.version: str = kb.version
        self.policy: ActorPolicy = kb.policy or packaged_policy()

    @classmethod
    def load(cls, kb_path: Path | str | None = None, city_dir: Path | str | None = None) -> Knowledge:
        """The knowledge base and city data; unset paths mean the packaged sample city (Xuhui)."""
        city_dir = Path(city_dir) if city_dir else DATA_DIR / "city"
        kb_path = Path(kb_path) if kb_path else DATA_DIR / "kb.yaml"
        taxonomy = Taxonomy.load(DATA_DIR / "taxonomy.yaml")
        city = City.load(city_dir / "city.yaml")
        kb = KnowledgeBase.load(kb_path, taxonomy, city)
        devices = DeviceRegistry.load(city_dir / "devices.yaml", city)
        corpus_dir = city_dir / "corpus" if (city_dir / "corpus").is_dir() else DATA_DIR / "corpus"
        field_registry = FieldRegistry.load(city_dir / "field.yaml", city)
        return cls(taxonomy, city, kb, devices, _classifier(taxonomy, corpus_dir, kb), corpus_dir, field_registry)

    # ------------------------------------------------------------ sample data for the simulator / demo
    def sample_places(self) -> list[SamplePlace]:
        """Every gazetteer address with its coordinates: places the locator is sure to find."""
        return [{"address": a.address, "lat": a.at[0], "lon": a.at[1]} for a in self.city.addresses.values()]

    def sample_devices(self) -> list[SampleDevice]:
        """One entry per (device, metric): heritage sensors with their threshold, lifts with ebike_detected."""
        out: list[SampleDevice] = [{"device_id": device_id, "metric": metric, "threshold": limit, "building": building}
                                   for device_id, metric, limit, building in self.devices.iter_sensor_metrics()]
        out += [{"device_id": device_id, "metric": "ebike_detected", "building": building}
                for device_id, building in self.devices.iter_kind("lift")]
        return out

    def sample_cameras(self) -> list[str]:
        return list(self.devices.cameras)

    def sample_heritage_addresses(self) -> list[str]:
        """Gazetteer addresses inside the 衡复 zone (a registry change there raises 历史建筑擅自装修)."""
        return [a.address for a in self.city.addresses.values() if self.city.cell_of(*a.at) in self.city.heritage_cells]

    @property
    def merge_rules(self) -> MergeRules:
        """Dedup radius, window and compatible groups per category (the KB's `merge` section)."""
        return self.kb.merge_rules

    @property
    def departments(self) -> list[str]:
        return list(self.city.departments)

    def crowd_plan(self, area: str | None) -> CrowdPlan | None:
        """The response plan 三级响应预案 of a camera area (its own, else the default; None: the KB has none)."""
        plans = self.kb.crowd_plans
        return plans.get(area or "") or plans.get("")

    def category(self, code_or_name: str) -> Category | None:
        return self.taxonomy.get(code_or_name)

    def classify(self, text: str) -> Classification:
        return self.classifier.classify(text)

    def classify_many(self, texts: list[str]) -> list[Classification]:
        return self.classifier.classify_many(texts)

    def read_context(self, text: str) -> list[str]:
        return self.classifier.read_context(text)

    def locate(self, lat: float | None, lon: float | None, address: str | None,
               text: str | None = None) -> tuple[Location | None, str | None]:
        return self.city.locate(lat, lon, address, text)

    def streets_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Street codes within ``radius_m`` of a point: where else a report there may have a twin."""
        return self.city.streets_near(lat, lon, radius_m)

    def route(self, category_code: str, context: Iterable[str], location: Location | None = None) -> Route:
        """First rule of the category whose `when` flags are all in the context (text + location)."""
        category = self.taxonomy.get(category_code)
        if category is None:
            raise KeyError(f"unknown category {category_code!r}")
        flags = set(context) | set(location.context if location else [])
        rule = next(r for r in self.kb.rules[category.code] if r.when <= flags)
        departments = list(rule.departments)
        rule_id = rule.id
        if rule.owner_component:
            component = self.city.component_at(rule.owner_component, location)
            if component is not None:
                departments = [component.owner] + [d for d in departments if d != component.owner]
                rule_id = f"{rule.id}+owner:{component.id}"
        for flag, extra in rule.add_when.items():
            if flag in flags:
                departments += [d for d in extra if d not in departments]
        assert rule.level in LEVELS
        units = self.units_of(departments, location.street if location else None,
                              location.community if location else None)
        return Route(departments, rule.level, dict(rule.limits), rule.escalate_on_red, rule.immediate,
                     self.version, rule_id, units)

    def units_of(self, departments: Iterable[str], street: str | None, community: str | None = None) -> list[str]:
        """The instance serving the place of each department kind (a name that already is an instance stays)."""
        return [name if name in self.city.unit_kind else self.city.unit_of(name, street, community)
                for name in departments]

    def departments_of(self, names: Iterable[str], street: str | None, community: str | None = None
                       ) -> tuple[list[str], list[str]]:
        """Kinds and instances of department names given as either (a centre's dispatch to a named
        instance or kind): ``(kinds, units)``, parallel; unknown names are kept as they are."""
        kinds, units = [], []
        for name in names:
            kind = self.city.kind_of(name) or name
            kinds.append(kind)
            units.append(name if name in self.city.unit_kind else self.city.unit_of(kind, street, community))
        return kinds, units
