"""The case engine's results, input by input, against a frozen reference (issue 14: the engine was made much
cheaper per signal; a shortcut that changes any result must fail here).

A deterministic mix of a few thousand inputs -- signals of every source kind clustered around a few dozen
hot spots (merges, compatible categories, cell-only and address-only reports, sensors and crowd counts,
re-delivered records), centre and department actions on the cases they opened, clock ticks, and the
cross-street probes, void-duplicates and absorbs the engine sends itself -- runs through a CaseEngine over
the real knowledge base, twice: without bounds (as bench/core.py runs it) and with the worker's bounds
(closed-case TTL, index lateness). Every output (rows, dispatches, alerts, notifications, rejections,
cross-partition items) is digested per input; the digests and the final state's are compared with
``data/engine_reference.json``, written by the engine before the speed work.

Regenerate the reference only for an intended change of results (a KB edit, a behaviour change), never for a
speed change: ``PYTHONPATH=. python tests/unit/core/cases/test_engine_reference.py --write``.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.cases.engine import CaseEngine, Outputs
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal
from streams.core.times import CITY_TZ

REFERENCE = Path(__file__).parent / "data" / "engine_reference.json"
START_MS = 1_731_888_000_000   # 2024-11-18 08:00 Shanghai, a Monday (work-hours clocks matter)
INPUTS = 4000
SEED = 14

CATEGORIES = ["暴露垃圾", "占道经营", "无照经营", "跨门经营", "群租", "噪声扰民", "施工扰民", "突发停水",
              "自来水管爆裂", "机动车乱停放", "私装地锁", "道路积水", "燃气泄漏", "损坏房屋承重结构", "马蜂窝",
              "流浪犬只"]
KINDS = [("12345", "hotline", 10), ("inspector", "field", 5), ("station", "field", 2), ("committee", "field", 1),
         ("camera", "camera", 3), ("sensor", "iot", 2), ("registry", "registry", 1)]
ACTIONS = [("accept", "center"), ("dispatch", "center"), ("handled", "department"), ("handled", "center"),
           ("verify_pass", "center"), ("verify_fail", "center"), ("close", "center"), ("refuse_close", "center"),
           ("return", "department"), ("escalate", "center"), ("urge", "center"), ("extend", "center"),
           ("extend", "department"), ("deny_extend", "center"), ("suspend", "center"), ("resume", "center"),
           ("void", "center"), ("step_down", "center"), ("accept", "department")]


def _digest(value: Any) -> str:
    return hashlib.sha1(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _out_digest(out: Outputs) -> str:
    return _digest(asdict(out))


def _iso(ms: int) -> str:
    from datetime import datetime
    return datetime.fromtimestamp(ms / 1000, CITY_TZ).isoformat()


class Scenario:
    """The inputs, generated as the engine answers (actions name the cases it opened)."""

    def __init__(self, knowledge: Knowledge, seed: int) -> None:
        self.kb = knowledge
        self.rng = random.Random(seed)
        places = knowledge.sample_places()
        self.spots: list[tuple[float, float, str | None]] = sorted((p["lat"], p["lon"], p["address"]) for p in places)
        for _ in range(30):   # more hot spots between the gazetteer's addresses
            p = self.rng.choice(places)
            self.spots.append((p["lat"] + self.rng.uniform(-0.004, 0.004), p["lon"] + self.rng.uniform(-0.004, 0.004),
                               None))
        self.devices = sorted({d["device_id"] for d in knowledge.sample_devices()})[:8]
        self.areas = sorted(a for a in knowledge.kb.crowd_plans if a) + [""]   # sorted: not by hash order
        self.now = START_MS
        self.n = 0
        self.sent: list[Signal] = []
        self.case_ids: list[str] = []

    def signal(self) -> Signal | None:
        rng = self.rng
        self.n += 1
        kind, source, _ = rng.choices(KINDS, weights=[k[2] for k in KINDS])[0]
        lat, lon, address = rng.choice(self.spots)
        lat += rng.gauss(0, 0.0003)
        lon += rng.gauss(0, 0.0003)
        category = rng.choice(CATEGORIES)
        extra: dict[str, Any] = {}
        level_hint = None
        if kind == "sensor":
            extra = {"device_id": rng.choice(self.devices), "value": round(rng.uniform(1, 9), 2)}
            category = "损坏房屋承重结构"
        elif kind == "camera" and rng.random() < 0.4:
            category = "人群聚集超限"
            extra = {"camera_id": f"CAM-{rng.randint(1, 5)}", "count": rng.choice([20, 80, 150, 400, 900, 1500]),
                     "area": rng.choice(self.areas)}
        elif kind == "camera":
            extra = {"camera_id": f"CAM-{rng.randint(1, 5)}"}
        elif rng.random() < 0.05:
            level_hint = rng.choice([1, 2, 3])
        shape = rng.random()
        if shape < 0.1:       # address only
            lat = lon = None  # type: ignore[assignment]
        elif shape < 0.2:     # coordinates only
            address = None
        location, _ = self.kb.city.at_point(lat, lon) if lat is not None else (None, None)
        cat = self.kb.category(category)
        if cat is None:
            return None
        on_spot = kind == "inspector" and rng.random() < 0.2
        self.now += rng.randint(5_000, 240_000)
        ts = self.now - rng.randint(0, 600_000)   # a little out of order
        return Signal(
            signal_id=f"sig-{self.n}", source=source, source_kind=kind, source_id=f"{kind}-{self.n}", ts_ms=ts,
            ingest_ms=ts, category_code=cat.code, category_name=cat.name, confidence=0.9,
            context=list(location.context) if location else [],
            lat=lat, lon=lon, cell=location.cell if location else None,
            community=location.community if location else None, street=location.street if location else None,
            street_code=location.street_code if location else None, district="徐汇区", address=address,
            reporter_id=f"r-{rng.randint(1, 400)}", reporter_kind=kind, handled_on_spot=on_spot or None,
            photos=["p1.jpg"] if on_spot else None, after_photos=["p2.jpg"] if on_spot and rng.random() < 0.8 else None,
            level_hint=level_hint, extra=json.dumps(extra, ensure_ascii=False) if extra else None)

    def action(self) -> dict[str, Any]:
        rng = self.rng
        self.n += 1
        name, actor_kind = rng.choice(ACTIONS)
        case_id = rng.choice(self.case_ids) if self.case_ids and rng.random() < 0.97 else "nope-20241118-0"
        actor_id = {"center": "徐汇区网格中心", "department": "绿化市容所"}[actor_kind]
        action: dict[str, Any] = {"action_id": f"a-{self.n}", "ts": _iso(self.now + rng.randint(-3_600_000, 60_000)),
                                  "case_id": case_id, "source_id": None, "actor_kind": actor_kind,
                                  "actor_id": actor_id, "action": name, "note": rng.choice([None, "电话 13812345678"]),
                                  "photos": None, "extend_minutes": rng.choice([None, 60, 240]),
                                  "departments": rng.choice([None, None, ["城管执法中队"]])}
        if rng.random() < 0.01:
            action["ts"] = "yesterday"
        return action


class Untouched(dict[str, Any]):
    """The cases mapping, checking that a stored document is never changed in place (the engine copies before
    it changes, and shares what it does not change): when a document is replaced, the old one must still be
    what was stored."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, bytes] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            assert orjson.dumps(self[key]) == self.stored[key], f"{key}: the stored document was changed in place"
        self.stored[key] = orjson.dumps(value)
        super().__setitem__(key, value)


def run(bounded: bool) -> tuple[list[str], str]:
    """Digests of every input's outputs, and of the final state."""
    knowledge = Knowledge.load()
    cases = Untouched()
    sources: dict[str, str] = {}
    engine = CaseEngine(knowledge, cases, sources, WorkCalendar(DEFAULT_OVERRIDE_FILE), auto_dispatch=not bounded,
                        closed_ttl_ms=2 * 86_400_000 if bounded else None,
                        index_lateness_ms=3_600_000 if bounded else None)
    scenario = Scenario(knowledge, SEED + bounded)
    digests: list[str] = []
    pending: list[dict[str, Any]] = []

    def take(out: Outputs) -> None:
        digests.append(_out_digest(out))
        for row in out.cases:
            if row["case_id"] not in scenario.case_ids:
                scenario.case_ids.append(row["case_id"])
        pending.extend(out.cross)

    for _ in range(INPUTS):
        draw = scenario.rng.random()
        if pending and draw < 0.3:
            item = pending.pop(0)
            handler = {"probe": engine.on_probe, "void_duplicate": engine.on_void_duplicate,
                       "absorb": engine.on_absorb}[item["kind"]]
            take(handler(item))
        elif draw < 0.72 or not scenario.case_ids:
            if scenario.sent and scenario.rng.random() < 0.05:   # a re-delivered record
                take(engine.on_signal(scenario.rng.choice(scenario.sent)))
                continue
            signal = scenario.signal()
            if signal is None:
                continue
            scenario.sent.append(signal)
            take(engine.on_signal(signal))
        elif draw < 0.95:
            take(engine.on_action(scenario.action()))  # type: ignore[arg-type]
        else:
            scenario.now += scenario.rng.randint(0, 4 * 3_600_000)
            take(engine.on_tick(scenario.now))
    for case_id, doc in cases.items():
        assert orjson.dumps(doc) == cases.stored[case_id], f"{case_id}: the stored document was changed in place"
    final = _digest({"cases": cases, "sources": sources, "live": sorted(engine.live),
                     "timers": engine.timers_pending(), "next_due": engine.next_due()})
    return digests, final


def _reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "worker-bounds"])
def test_engine_outputs_match_the_frozen_reference(bounded: bool) -> None:
    digests, final = run(bounded)
    expected = _reference()["bounded" if bounded else "unbounded"]
    assert len(digests) == len(expected["inputs"])
    first = next((i for i, (a, b) in enumerate(zip(digests, expected["inputs"], strict=True)) if a != b), None)
    assert first is None, f"input {first}: the outputs differ from the reference (and maybe later ones)"
    assert final == expected["final"], "the final cases/sources/index/timers differ from the reference"


def test_the_scenario_exercises_the_engine() -> None:
    """The reference is worth something only if the mix merges, dispatches, fires timers and crosses streets."""
    knowledge = Knowledge.load()
    engine = CaseEngine(knowledge, {}, {}, WorkCalendar(DEFAULT_OVERRIDE_FILE), auto_dispatch=True)
    scenario = Scenario(knowledge, SEED)
    total = Outputs()
    for _ in range(1500):
        signal = scenario.signal()
        if signal is not None:
            total.extend(engine.on_signal(signal))
    total.extend(engine.on_tick(scenario.now + 30 * 86_400_000))
    assert total.merged > 200 and len(total.dispatches) > 200
    assert {a["kind"] for a in total.sla_alerts} >= {"sla_yellow", "sla_red", "urge"}
    assert {item["kind"] for item in total.cross} == {"probe"}
    assert any(n["kind"] == "response_level" for n in total.notifications)


def _write() -> Iterator[str]:
    data = {}
    for bounded in (False, True):
        digests, final = run(bounded)
        data["bounded" if bounded else "unbounded"] = {"inputs": digests, "final": final}
        yield f"{'bounded' if bounded else 'unbounded'}: {len(digests)} inputs, final {final}"
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    for line in _write():
        print(line)


def test_the_summary_holds_the_summary_keys() -> None:
    from streams.core.cases.engine import SUMMARY_KEYS
    doc = {key: f"v-{key}" for key in SUMMARY_KEYS} | {"stage": "handle"}
    assert CaseEngine.summary(doc) == {key: f"v-{key}" for key in SUMMARY_KEYS}  # type: ignore[arg-type]
    assert list(CaseEngine.summary(doc)) == list(SUMMARY_KEYS)  # type: ignore[arg-type]
