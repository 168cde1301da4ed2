"""Hypothesis stateful test: random signals, actions and ticks against the engine; invariants hold
after every step (no close without verification, rejected actions change nothing, only authorised actors change a
case, timers fire once, versions only grow, a rebuilt engine agrees with the running one)."""
from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streams.core.cases import dedup, lifecycle
from streams.core.cases.engine import CaseEngine
from streams.core.model import Signal
from streams.core.times import CITY_TZ
from tests.unit.core.cases.support import CATEGORIES, KnowledgeDouble

T0 = 1_793_581_200_000  # 2026-11-02 09:00 +08:00 (a Monday)
ACTORS = [("center", "街道网格中心"), ("center", "区网格中心"), ("department", "城管执法中队"),
          ("department", "房管办"), ("department", "绿化市容所"), ("committee", "怡桂苑居委会"),
          ("station", "乐山新村工作站"), ("inspector", "INS-1"), ("department", "物业公司")]
SOURCE_KINDS = ["12345", "committee", "inspector", "camera", "station"]
# the forward actions, listed again so random runs reach 核查 and 结案 often
PROGRESS = ["dispatch", "accept", "handled", "verify_pass", "close"] * 2
PLACES = [(31.1700, 121.4120, "钦江路15号"), (31.1683, 121.4302, "漕溪北路88号"), (31.1900, 121.4400, "宜山路100号")]


class CaseMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.cases: dict = {}
        self.sources: dict = {}
        self.engine = CaseEngine(KnowledgeDouble(), self.cases, self.sources)
        self.now = T0
        self.n = 0
        self.alerts: list[tuple[str, int, str]] = []  # (case, timer seq, kind) fired
        self.versions: dict[str, int] = {}

    def _record(self, out) -> None:
        for row in out.cases:
            assert row["version"] > self.versions.get(row["case_id"], 0), "version must grow on each change"
            self.versions[row["case_id"]] = row["version"]
        for a in out.sla_alerts:
            if a["kind"] in ("sla_yellow", "sla_red"):
                self.alerts.append((a["case_id"], a["alert_id"], a["kind"]))

    @rule(minutes=st.integers(0, 3 * 1440))
    def time_passes(self, minutes: int) -> None:
        self.now += minutes * 60_000
        self._record(self.engine.on_tick(self.now))

    @rule(category=st.sampled_from(sorted(CATEGORIES)), kind=st.sampled_from(SOURCE_KINDS),
          place=st.sampled_from(PLACES), redeliver=st.booleans())
    def a_signal(self, category: str, kind: str, place, redeliver: bool) -> None:
        self.n += 1
        lat, lon, address = place
        sid = f"src-{self.n - 1 if redeliver and self.n > 1 else self.n}"
        sig = Signal(f"sig-{sid}", "field", kind, sid, self.now, self.now, CATEGORIES[category][0], category, 0.9,
                     ["committee"] if kind == "committee" else [], lat, lon, None, "c", "虹梅街道", "310104013",
                     "徐汇区", address, reporter_id="怡桂苑居委会" if kind == "committee" else f"rep-{self.n}")
        self._record(self.engine.on_signal(sig))

    @precondition(lambda self: bool(self.cases))
    @rule(data=st.data(), name=st.sampled_from(list(lifecycle.ACTIONS) + PROGRESS),
          extend=st.none() | st.integers(-10, 600))
    def an_action(self, data, name: str, extend) -> None:
        case_id = data.draw(st.sampled_from(sorted(self.cases)))
        doc = self.cases[case_id]
        # besides random actors, the ones this case knows (its departments, its originator), so that
        # the happy path is reached as often as the refusals
        own = [("department", d) for d in doc["departments"]] + [(doc["origin"], doc["origin_reporter"] or "")]
        actor = data.draw(st.sampled_from(ACTORS + own * 3))
        self._apply(case_id, name, actor, extend)

    @precondition(lambda self: bool(self.cases))
    @rule(data=st.data(),
          verdict=st.sampled_from(["verify_pass", "verify_pass", "verify_fail", "refuse_close", "close"]))
    def next_step(self, data, verdict: str) -> None:
        """The action the case waits for, by the actor who may take it (drives cases to the end)."""
        case_id = data.draw(st.sampled_from(sorted(self.cases)))
        doc = self.cases[case_id]
        closer = (doc["origin"], doc["origin_reporter"]) if doc["origin"] in ("station", "committee") else (
            "center", "街道网格中心")
        step = {"register": ("accept", ("center", "街道网格中心")),
                "dispatch": ("dispatch", ("center", "街道网格中心")),
                "handle": ("handled", ("department", doc["departments"][0])),
                # "close" while still in verify: the closer trying to skip 核查 (must be rejected)
                "verify": (verdict, closer),
                "close": ("close" if verdict in ("verify_pass", "close") else "refuse_close", closer)}.get(doc["stage"])
        if step is None:
            return
        if doc.get("suspended_ms") is not None:
            step = ("resume", ("center", "街道网格中心"))
        self._apply(case_id, step[0], step[1], None)

    def _apply(self, case_id: str, name: str, actor: tuple[str, str], extend: int | None) -> None:
        self.n += 1
        event(f"{self.cases[case_id]['stage']}:{name}")
        self.n += 1
        before = copy.deepcopy(self.cases[case_id])
        iso = __import__("datetime").datetime.fromtimestamp(self.now / 1000, CITY_TZ).isoformat()
        act = {"action_id": f"act-{self.n}", "ts": iso, "case_id": case_id, "source_id": None,
               "actor_kind": actor[0], "actor_id": actor[1], "action": name, "note": None, "photos": None,
               "extend_minutes": extend, "departments": None}
        out = self.engine.on_action(act)
        self._record(out)
        after = self.cases[case_id]
        if out.rejections:
            assert after == before, "a rejected action must change nothing"
            assert out.rejections[0]["reason"]
            assert not out.case_transitions
        else:
            assert out.case_transitions, "an applied action leaves a transition row"
            assert after["version"] == before["version"] + 1
            # the authority policy held: the actor had a role allowed (or allowed to ask) for the action
            self.engine.policy.decide(before, actor[0], actor[1], name)
        if not out.rejections:
            event(f"applied {name}")
        if name == "close" and not out.rejections:
            assert before["stage"] == "close", "closed without a passed verification"
            assert "verify" in after["stages"]
        if before["stage"] in ("closed", "void"):
            assert out.rejections

    @rule()
    def restart(self) -> None:
        """A worker restart: a fresh engine rebuilt from the same mappings."""
        self.engine = CaseEngine(KnowledgeDouble(), self.cases, self.sources)
        self.engine.rebuild()

    @invariant()
    def documents_are_consistent(self) -> None:
        for doc in getattr(self, "cases", {}).values():
            assert doc["stage"] in lifecycle.OPEN_STAGES + (lifecycle.CLOSED, lifecycle.VOID)
            assert doc["open"] == (doc["stage"] in lifecycle.OPEN_STAGES)
            assert 1 <= doc["level"] <= 4
            assert doc["reporters"] == len(doc["reporter_keys"]) >= 1
            if doc["stage"] == lifecycle.CLOSED:
                assert "verify" in doc["stages"] and "close" in doc["stages"]
            timer = doc.get("timer")
            if timer is not None:
                assert timer["stage"] == doc["stage"]
                assert timer["yellow_ms"] <= timer["deadline_ms"]
            json.dumps(doc)  # stays JSON-able (a Faust table stores it as JSON)

    @invariant()
    def indexes_match_a_rebuild(self) -> None:
        """The incrementally kept indexes equal those a restart derives from the documents."""
        if not hasattr(self, "engine"):
            return
        fresh = dedup.DedupIndex(self.engine.index.rules)
        fresh.rebuild(self.cases)
        assert {k: sorted(map(str, v)) for k, v in fresh.keys.items()} == {
            k: sorted(map(str, v)) for k, v in self.engine.index.keys.items()}
        pending = {(e[1], e[2], e[3]) for heap in self.engine.deadlines.values() for e in heap}
        for case_id, doc in self.cases.items():
            timer = doc.get("timer")
            if doc["open"] and timer and doc.get("suspended_ms") is None:
                if not timer["yellow_fired"]:
                    assert (case_id, timer["seq"], "yellow") in pending, "a yellow timer is missing from the heap"
                if not timer["red_fired"]:
                    assert (case_id, timer["seq"], "red") in pending, "a red timer is missing from the heap"

    @invariant()
    def timers_fire_at_most_once(self) -> None:
        alerts = getattr(self, "alerts", [])
        assert len(alerts) == len(set(alerts)), "a light fired twice"


CaseMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestCaseMachine = CaseMachine.TestCase
