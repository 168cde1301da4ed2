"""A month of recorded city history for ``streams replay``: the simulator's calls and field reports,
stations' zero reports 零报告, and the officers' actions that move each case through 立案, 派遣, 处置,
核查 and 结案 — mostly on time, sometimes late, sometimes extended 延期 or sent back 返工.

The actions must name the cases the engine opens, so the generator runs the same ingest and case
engine as ``streams replay`` while it writes: events and actions come out in event-time order, and
replaying the file reproduces the very cases the generator saw (case ids are deterministic). Used
to render a sample monthly 考核报告 (``streams report``) and by its tests.
"""
from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.core.cases import sla
from streams.core.cases.engine import CaseEngine, Outputs
from streams.core.cases.model import CaseAction, CaseDoc
from streams.core.ingest import FEEDS, Ingestor, RejectRecord
from streams.core.times import CITY_TZ, iso_to_ms
from streams.sources.feeds import CityFeeds, places_from_knowledge

CENTRE = "街道网格中心"
INSPECTORS = [f"INS-{i:03d}" for i in range(1, 13)]
STATIONS = [f"STA-{i:03d}" for i in range(1, 9)]
COMMITTEES = [f"COM-{i:03d}" for i in range(1, 7)]
TOPIC_FEED = {topic: feed for feed, topic in FEEDS.items()}


@dataclass(frozen=True)
class Behaviour:
    """How punctual the sample city's officers are (shares of 0..1)."""

    late_handling: float = 0.15       # 处置 past the limit
    never_handled: float = 0.03       # left open: overdue at the month's end
    extension: float = 0.06           # 延期 asked before handling
    late_verification: float = 0.12
    verify_fail: float = 0.08         # 返工 on the first verification


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """'2026-11' -> local midnight of the 1st, local midnight of the next month's 1st."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=CITY_TZ)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CITY_TZ).isoformat(timespec="seconds")


class HistoryWriter:
    def __init__(self, knowledge: Any, month: str, seed: int = 7, calls_per_day: int = 12,
                 reports_per_day: int = 6, triage_confidence: float = 0.55, auto_dispatch: bool = True,
                 behaviour: Behaviour = Behaviour()) -> None:
        # triage_confidence and auto_dispatch must be those the replay runs with (Settings)
        self.knowledge = knowledge
        self.start, self.end = month_bounds(month)
        self.rng = random.Random(seed)
        self.feeds = CityFeeds(seed, places_from_knowledge(knowledge))
        self.calls_per_day, self.reports_per_day = calls_per_day, reports_per_day
        self.behaviour = behaviour
        self.calendar = sla.default_calendar()
        self.ingestor = Ingestor(knowledge, triage_confidence)
        self.engine = CaseEngine(knowledge, {}, {}, self.calendar, auto_dispatch=auto_dispatch)
        self.station_diligence = {s: self.rng.uniform(0.55, 1.0) for s in STATIONS}
        self._actions: list[tuple[int, int, CaseAction]] = []
        self._planned: set[tuple[Any, ...]] = set()
        self._seq = 0

    # ------------------------------------------------------------ raw events
    def _raw_events(self) -> list[tuple[int, str, dict[str, Any]]]:
        events: list[tuple[int, str, dict[str, Any]]] = []
        day = self.start
        while day < self.end:
            workday = self.calendar.is_workday(day.date())
            for _ in range(self.calls_per_day):
                at = day + timedelta(minutes=self.rng.randrange(7 * 60, 22 * 60))
                events.append((int(at.timestamp() * 1000), "hotline.calls", self.feeds.hotline(at)))
            for _ in range(self.reports_per_day if workday else self.reports_per_day // 3):
                at = day + timedelta(minutes=self.rng.randrange(8 * 60, 18 * 60))
                events.append((int(at.timestamp() * 1000), "field.reports", self._field_report(at)))
            if workday:
                for station in STATIONS:  # 有事报事，无事报平安: the daily zero report
                    if self.rng.random() < self.station_diligence[station]:
                        at = day + timedelta(hours=17, minutes=self.rng.randrange(0, 60))
                        events.append((int(at.timestamp() * 1000), "field.reports", {
                            "report_id": f"ZR-{station}-{day:%Y%m%d}", "reporter_id": station,
                            "reporter_kind": "station", "reported_at": at.isoformat(timespec="seconds"),
                            "zero_report": True}))
            day += timedelta(days=1)
        events.sort(key=lambda e: e[0])
        return events

    def _field_report(self, at: datetime) -> dict[str, Any]:
        report = self.feeds.field_report(at)
        pool = {"inspector": INSPECTORS, "station": STATIONS, "committee": COMMITTEES}[report["reporter_kind"]]
        report["reporter_id"] = self.rng.choice(pool)
        return report

    # ------------------------------------------------------------ officers
    def _at(self, doc: CaseDoc, fraction: float, floor_minutes: int = 5) -> int:
        """An instant ``fraction`` of the way through the current stage's limit (its own clock)."""
        timer = doc.get("timer")
        started = doc["stage_started_ms"]
        if not timer:
            return started + self.rng.randrange(floor_minutes, 120) * 60_000
        amount = max(int(timer["limit_ms"] * fraction), floor_minutes * 60_000)
        return max(started + floor_minutes * 60_000, sla.deadline_ms(started, timer["clock"], amount, self.calendar))

    def _schedule(self, ts_ms: int, doc: CaseDoc, action: str, actor_kind: str, actor_id: str, *,
                  note: str | None = None, extend_minutes: int | None = None) -> None:
        ts_ms = -(-ts_ms // 1000) * 1000  # whole seconds, as the record's ISO time says (replay reads that)
        self._seq += 1
        record: CaseAction = {
            "action_id": f"H-{self._seq:06d}", "ts": _iso(ts_ms), "case_id": doc["case_id"], "source_id": None,
            "actor_kind": actor_kind, "actor_id": actor_id, "action": action, "note": note, "photos": None,
            "extend_minutes": extend_minutes, "departments": None}
        heapq.heappush(self._actions, (ts_ms, self._seq, record))

    def _plan(self, doc: CaseDoc) -> None:
        """Schedule the next action of a case whose stage just began."""
        key = (doc["case_id"], doc["stage"], doc.get("rework_count", 0), doc.get("timer_seq"))
        if not doc.get("open") or doc.get("suspended_ms") is not None or key in self._planned:
            return
        self._planned.add(key)
        b, stage, rng = self.behaviour, doc["stage"], self.rng
        if stage == "register":
            self._schedule(self._at(doc, rng.uniform(0.1, 0.7)), doc, "accept", "center", CENTRE)
        elif stage == "dispatch":
            self._schedule(self._at(doc, rng.uniform(0.1, 0.8)), doc, "dispatch", "center", CENTRE)
        elif stage == "handle" and doc.get("departments"):
            roll = rng.random()
            if roll < b.never_handled:
                return
            department = doc["departments"][0]
            timer = doc.get("timer")
            if roll < b.never_handled + b.extension and timer:
                minutes = max(60, timer["limit_ms"] // 60_000 // 2)
                asked = self._at(doc, rng.uniform(0.3, 0.7))
                self._schedule(asked, doc, "extend", "department", department,
                               extend_minutes=int(minutes), note="需协调，申请延期")
                # 延期 is a request (the KB's authority policy): the centre grants it as asked
                self._schedule(asked + 30 * 60_000, doc, "extend", "center", CENTRE, note="同意延期")
                self._schedule(self._at(doc, rng.uniform(1.0, 1.4)), doc, "handled", "department", department)
                return
            late = rng.random() < b.late_handling
            self._schedule(self._at(doc, rng.uniform(1.1, 2.5) if late else rng.uniform(0.15, 0.9)), doc,
                           "handled", "department", department, note="已处置")
        elif stage == "verify":
            kind, reporter = self.engine.policy.closer_of(doc)
            actor = reporter or CENTRE
            if kind == "center" and rng.random() < 0.6:  # the street centre sends a grid inspector to 核查
                kind, actor = "inspector", rng.choice(INSPECTORS)
            late = rng.random() < b.late_verification
            at = self._at(doc, rng.uniform(1.1, 3.0) if late else rng.uniform(0.1, 0.9))
            fail = doc.get("rework_count", 0) == 0 and rng.random() < b.verify_fail
            self._schedule(at, doc, "verify_fail" if fail else "verify_pass", kind, actor,
                           note="复查未整改到位" if fail else "核查通过")
        elif stage == "close":
            kind, reporter = self.engine.policy.closer_of(doc)
            self._schedule(doc["stage_started_ms"] + rng.randrange(5, 90) * 60_000, doc, "close", kind,
                           reporter or CENTRE, note="同意结案")

    def _after(self, out: Outputs) -> None:
        for row in out.cases:
            doc = self.engine.cases.get(row["case_id"])
            if doc is not None:
                self._plan(doc)

    # ------------------------------------------------------------ the month
    def lines(self) -> Iterator[str]:
        """JSON lines {"topic", "value"} in event-time order (what ``streams replay`` reads)."""
        end_ms = int(self.end.timestamp() * 1000)
        raw = self._raw_events()
        i = 0
        while i < len(raw) or self._actions:
            next_raw = raw[i][0] if i < len(raw) else None
            next_action = self._actions[0][0] if self._actions else None
            if next_action is not None and (next_raw is None or next_action < next_raw):
                ts_ms, _, action = heapq.heappop(self._actions)
                if ts_ms >= end_ms:
                    continue  # after the month: left for next month's history
                self._after(self.engine.on_tick(ts_ms))
                out = self.engine.on_action(action)
                if out.rejections:
                    continue  # the case moved on (merged, escalated): the officer had nothing to do
                self._after(out)
                yield json.dumps({"topic": "case.actions", "value": action}, ensure_ascii=False)
                continue
            ts_ms, topic, record = raw[i]
            i += 1
            self._after(self.engine.on_tick(ts_ms))
            yield json.dumps({"topic": topic, "value": record}, ensure_ascii=False)
            try:
                result = self.ingestor.ingest(TOPIC_FEED[topic], record, ts_ms)
            except RejectRecord:
                continue
            for signal in result.signals:
                self._after(self.engine.on_signal(signal))


def write_month(knowledge: Any, month: str, path: str, **options: Any) -> int:
    """Write a month of history to ``path``; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for line in HistoryWriter(knowledge, month, **options).lines():
            fh.write(line + "\n")
            n += 1
    return n


def replay_end_ms(month: str) -> int:
    """The last instant of the month (where a replay's virtual clock should stop)."""
    return iso_to_ms(month_bounds(month)[1].isoformat()) - 1


