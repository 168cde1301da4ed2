"""The case engine: signals, actions and clock ticks in; case rows, transitions, dispatches, SLA
alerts, rejections and department notifications out. Pure Python: the worker feeds it from Faust
(with Faust tables as the two mappings), ``streams replay`` from a file (with dicts).

State is only what the two mappings hold (``cases``: case_id → case document, ``sources``:
source_id → case_id); the dedup index and, with the in-memory queue, the timers are derived from them by
:meth:`CaseEngine.rebuild`. Every change to a document is written back with ``cases[case_id] = doc`` (a
Faust table only persists assignments). Timer state (yellow/red fired) lives in the document, so a restart
that rebuilds from the changelog never fires a timer twice.

Bounded state (for a city's millions of cases): with ``closed_ttl_ms`` a closed or void case leaves the
mappings that long after it finished (its rows stay in ClickHouse); with ``index_lateness_ms`` the dedup
index holds only the cases a new report can still join — those whose merge window (by category, from the
last report) reaches the newest report seen minus that lateness — plus open sensor cases (a sensor stays on
its case whatever the window). The index matches against small summaries of those cases, never a full
document. ``on_change(before, after)`` sees every committed or purged document (the worker keeps its
gauges and disk indexes by it, without walking the cases).

Across street boundaries (the worker partitions cases by street, so an engine sees its streets only): a case
opened by a report within its category's merge radius of another street sends a **probe** to that street's
partition (``Outputs.cross``). There, if an open case matches the report, the older of the two cases wins:
the other is voided 作废 as a duplicate by its own partition and its reports are **absorbed** by the winner.
Both sides decide the winner alike (opening time, then id), so two cases opened at once on either side end
as one, whichever probe arrives first.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, Protocol, cast

import orjson

from streams.core.cases import crowd, dedup, lifecycle, sla
from streams.core.cases.authority import ActorPolicy, NotAuthorised
from streams.core.cases.lifecycle import Rejected, Step
from streams.core.cases.model import (
    CaseAction,
    CaseDoc,
    CaseRow,
    CaseSummary,
    DispatchRow,
    Notification,
    Rejection,
    SlaAlertRow,
    TransitionRow,
)
from streams.core.cases.timers import HeapTimers, Timer, TimerQueue
from streams.core.knowledge.knowledge import packaged_policy
from streams.core.model import STAGES, Location, Signal, TableRows
from streams.core.privacy import mask_fields
from streams.core.times import CITY_TZ, BadTimestamp, iso_to_ms

SYSTEM = "system"
# A case a sensor or camera keeps alerting on must not grow without end (it is one table value):
# the first sources are listed, the latest ids are remembered for idempotency.
MAX_SOURCES = 100
# Street-code stand-in for a signal without a street, the prefix of its case id. The one definition:
# the worker keys such signals on case.inputs with it (streams.bus.records.case_inputs_key), so
# actions routed by the case-id prefix reach the same partition.
UNLOCATED = "unlocated"
MAX_REMEMBERED = 500
# What the dedup index keeps of an indexed case: what dedup.matches and DedupIndex.find read.
SUMMARY_KEYS = ("case_id", "partition", "category_name", "origin", "open", "opened_ms", "last_signal_ms", "places",
                "devices")
# window end of a case a sensor reports: it stays in the index while open
FOREVER_MS = 2**62
# Who is told about an escalation, by the level the case rises to.
CENTRE_OF_LEVEL = {4: lifecycle.STATION_DEPARTMENT, 3: lifecycle.STREET_CENTRE, 2: lifecycle.DISTRICT_CENTRE,
                   1: lifecycle.DISTRICT_CENTRE}


class RouteLike(Protocol):
    departments: list[str]
    level: int
    stage_limits: dict[str, tuple[str, int]]
    escalate_on_red: bool
    immediate: bool
    kb_version: str


class KnowledgeLike(Protocol):
    # read-only properties: Knowledge serves them from its current KB
    @property
    def version(self) -> str: ...
    @property
    def merge_rules(self) -> dedup.MergeRules: ...  # the KB's dedup radius, window and compatible groups

    def route(self, category_code: str, context: Iterable[str], location: Location | None = None) -> RouteLike: ...


def home_of(case_id: str) -> str:
    """The street code a case's inputs are keyed by: the prefix of its id (``make_case_id``)."""
    return case_id.split("-", 1)[0]


@dataclass
class Outputs:
    """Rows by ClickHouse table name, plus rejections and notifications."""

    cases: list[CaseRow] = field(default_factory=list)
    case_transitions: list[TransitionRow] = field(default_factory=list)
    dispatches: list[DispatchRow] = field(default_factory=list)
    sla_alerts: list[SlaAlertRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    merged: int = 0
    # inputs for other partitions' cases (cross-boundary dedup): {"key": street code, "kind": ..., ...}
    cross: list[dict[str, Any]] = field(default_factory=list)

    TABLES = ("cases", "case_transitions", "dispatches", "sla_alerts")

    def extend(self, other: Outputs) -> None:
        self.cases.extend(other.cases)
        self.case_transitions.extend(other.case_transitions)
        self.dispatches.extend(other.dispatches)
        self.sla_alerts.extend(other.sla_alerts)
        self.rejections.extend(other.rejections)
        self.notifications.extend(other.notifications)
        self.cross.extend(other.cross)
        self.merged += other.merged

    def tables(self) -> dict[str, TableRows]:
        """The store rows of this output, by table (only non-empty tables), in the order of TABLES."""
        rows: dict[str, TableRows] = {"cases": self.cases, "case_transitions": self.case_transitions,
                                      "dispatches": self.dispatches, "sla_alerts": self.sla_alerts}
        return {name: rows[name] for name in self.TABLES if rows[name]}

    def __bool__(self) -> bool:
        return bool(self.cases or self.case_transitions or self.dispatches or self.sla_alerts
                    or self.rejections or self.notifications or self.cross)


def _clone(doc: CaseDoc) -> CaseDoc:
    """A private copy to change (committed only when complete); the document is JSON anyway and
    an orjson round trip is much faster than copy.deepcopy (and than the stdlib json)."""
    return cast(CaseDoc, orjson.loads(orjson.dumps(doc)))


# What a merge (CaseEngine._merge: _add_report, lifecycle.stay / move, crowd.step) changes *in place* in a
# document; every other value it replaces with a new object, or leaves alone.
_MERGE_MUTATES = ("reporter_keys", "sources", "lights", "stages")


def _clone_for_merge(doc: CaseDoc) -> CaseDoc:
    """The copy a report merges into: a new top level, new containers for what the merge changes in place
    (_MERGE_MUTATES), the rest shared with ``doc``. The engine never changes a committed document's values
    in place (every other path starts from a full :func:`_clone`), so sharing is safe, and a sensor case's
    hundreds of remembered ids are not copied (nor left for the garbage collector) per report."""
    copy = cast(dict[str, Any], dict(doc))
    for key in _MERGE_MUTATES:
        value = copy.get(key)
        if value is not None:
            copy[key] = value.copy()
    return cast(CaseDoc, copy)


def _hash(*parts: object, n: int = 20) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode("utf-8")).hexdigest()[:n]


_SORTED_COMPACT = orjson.OPT_SORT_KEYS


def _detail_json(detail: dict[str, object]) -> str:
    """``json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))``, by orjson when that is
    the same text: str keys; str, int, bool and None values and lists of str (orjson writes every string as
    json does, but floats differently, e.g. 1e-05); anything else goes to the stdlib as before."""
    for value in detail.values():
        kind = type(value)
        if kind is list or kind is tuple:
            if any(type(item) is not str for item in cast(list[object], value)):
                break
        elif not (kind is str or kind is int or kind is bool or value is None):
            break
    else:
        try:
            return orjson.dumps(detail, option=_SORTED_COMPACT).decode()
        except TypeError:   # a key that is not a str, an int beyond 64 bits: the stdlib decides
            pass
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _stages_json(stages: dict[str, int]) -> str:
    """``json.dumps(stages, sort_keys=True)`` (the ``cases.stages`` column), written directly for the usual
    stage names and int instants."""
    if all(type(k) is str and k.isascii() and k.isidentifier() and type(v) is int for k, v in stages.items()):
        return "{" + ", ".join(f'"{k}": {stages[k]}' for k in sorted(stages)) + "}"
    return json.dumps(stages, sort_keys=True)


_DAY_TEXT: dict[date, str] = {}
_SIGNAL_FIELDS = tuple(f.name for f in fields(Signal))


def _signal_dict(signal: Signal) -> dict[str, Any]:
    """``signal.to_dict()`` (dataclasses.asdict: lists copied) without asdict's generic deep copy, which costs
    more than the rest of a cross-street probe; anything but a list of strings is left to asdict."""
    out: dict[str, Any] = {}
    for name in _SIGNAL_FIELDS:
        value = getattr(signal, name)
        if type(value) is list:
            if not all(type(item) is str for item in value):
                return signal.to_dict()
            value = list(value)
        elif not (value is None or type(value) in (str, int, float, bool)):
            return signal.to_dict()
        out[name] = value
    return out


def _deadline_ms(doc: CaseDoc) -> int:
    """The deadline of the stage the case waits in; 0 when that stage has no limit."""
    timer = doc.get("timer")
    return int(timer.get("deadline_ms") or 0) if timer else 0


def make_case_id(signal: Signal) -> str:
    """``{street_code}-{yyyymmdd}-{8 hex}``; deterministic from the first signal (replays agree)."""
    local = sla.local_date(signal.ts_ms)
    day = _DAY_TEXT.get(local)
    if day is None:
        if len(_DAY_TEXT) > 4096:
            _DAY_TEXT.clear()
        day = _DAY_TEXT[local] = local.strftime("%Y%m%d")
    return f"{signal.street_code or UNLOCATED}-{day}-{_hash(signal.signal_id, n=8)}"


def iso_local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CITY_TZ).isoformat()


Change = Callable[[CaseDoc | None, CaseDoc | None], None]  # (before, after); None: absent / purged


class CaseEngine:
    def __init__(self, knowledge: KnowledgeLike, cases: MutableMapping[str, CaseDoc],
                 sources: MutableMapping[str, str], calendar: sla.WorkCalendar | None = None,
                 auto_dispatch: bool = False, policy: ActorPolicy | None = None, *, timers: TimerQueue | None = None,
                 closed_ttl_ms: int | None = None, index_lateness_ms: int | None = None,
                 on_change: Change | None = None) -> None:
        # auto_dispatch: every case is registered 立案 on arrival and dispatched 派遣 by the KB at once
        # (the centre's review happens in triage 人工分拨 for what the classifier is unsure of). False:
        # hotline calls wait for the centre's accept, and only level-4 / immediate routes dispatch themselves.
        self.auto_dispatch = auto_dispatch
        self.knowledge = knowledge
        # who may take which action: the KB's authority section (the packaged one for test doubles)
        self.policy = policy or getattr(knowledge, "policy", None) or packaged_policy()
        self.cases = cases
        self.sources = sources
        self.calendar = calendar or sla.default_calendar()
        self.index = dedup.DedupIndex(knowledge.merge_rules)
        # pending timers (due_ms, case_id, seq, "yellow"|"red"|"purge"); stale entries are skipped when fired
        self.timers: TimerQueue = timers if timers is not None else HeapTimers()
        self.closed_ttl_ms = closed_ttl_ms
        self.index_lateness_ms = index_lateness_ms
        self.on_change = on_change
        # the dedup index's cases: case_id -> summary (SUMMARY_KEYS), and when each leaves the index
        self.live: dict[str, CaseDoc] = {}
        self._window_end: dict[str, int] = {}
        self._expiry: list[tuple[int, str]] = []  # heap of (window end, case_id); stale entries skipped
        self.watermark_ms = 0                     # the newest report's event time seen

    @property
    def deadlines(self) -> dict[int, list[tuple[int, str, int, str]]]:
        """The in-memory timer heaps by partition (only with HeapTimers)."""
        return self.timers.deadlines if isinstance(self.timers, HeapTimers) else {}

    # ------------------------------------------------------------ indexes

    def rebuild(self, docs: Iterable[CaseDoc] | None = None) -> None:
        """Derive the dedup index (and in-memory timers) after start, restart or rebalance: from ``docs``
        (the cases a persistent store knows to be within their merge window; its timers are on disk), or
        from every case of ``cases``."""
        self.index = dedup.DedupIndex(self.index.rules)
        self.live.clear()
        self._window_end.clear()
        self._expiry.clear()
        in_memory = isinstance(self.timers, HeapTimers)
        if in_memory:
            self.timers.clear()
        if docs is None:
            docs = (doc for doc in (self.cases.get(case_id) for case_id in list(self.cases)) if doc is not None)
        for doc in docs:
            self.watermark_ms = max(self.watermark_ms, doc.get("last_signal_ms", 0))
            self._index(doc)
            if in_memory:
                self._schedule(doc)
        self.evict()

    def window_end(self, doc: CaseDoc) -> int | None:
        """Until when (event time) a new report may still join the case; None once it is closed."""
        if not doc.get("open"):
            return None
        if doc.get("origin") == "sensor":
            return FOREVER_MS
        rule = self.index.rules.rule_for(doc["category_name"])
        return int(doc.get("last_signal_ms", doc["opened_ms"])) + rule.window_ms

    def _index(self, doc: CaseDoc) -> None:
        case_id = doc["case_id"]
        end = self.window_end(doc)
        if end is None or (self.index_lateness_ms is not None and end < self.watermark_ms - self.index_lateness_ms):
            self._unindex(case_id)
            return
        summary = self.live[case_id] = self.summary(doc)
        self.index.update(case_id, summary)   # the index matches what find() would read of live
        if self._window_end.get(case_id) != end:
            self._window_end[case_id] = end
            heapq.heappush(self._expiry, (end, case_id))

    @staticmethod
    def summary(doc: CaseDoc) -> CaseDoc:
        """What the dedup index keeps of a case (SUMMARY_KEYS); :meth:`rebuild` accepts these for documents."""
        get = doc.get   # {key: doc.get(key) for key in SUMMARY_KEYS}, spelled out: it runs for every commit
        return cast(CaseDoc, {"case_id": get("case_id"), "partition": get("partition"),
                              "category_name": get("category_name"), "origin": get("origin"), "open": get("open"),
                              "opened_ms": get("opened_ms"), "last_signal_ms": get("last_signal_ms"),
                              "places": get("places"), "devices": get("devices")})

    def _unindex(self, case_id: str) -> None:
        self.index.remove(case_id)
        self.live.pop(case_id, None)
        self._window_end.pop(case_id, None)

    def evict(self) -> int:
        """Drop from the index the cases whose merge window ended before the watermark minus the lateness."""
        if self.index_lateness_ms is None:
            return 0
        horizon = self.watermark_ms - self.index_lateness_ms
        evicted = 0
        while self._expiry and self._expiry[0][0] < horizon:
            end, case_id = heapq.heappop(self._expiry)
            if self._window_end.get(case_id) == end:
                self._unindex(case_id)
                evicted += 1
        return evicted

    def timers_of(self, doc: CaseDoc) -> list[Timer]:
        """The timers a committed document waits for: its stage's yellow and red, or its purge once finished."""
        if not doc.get("open"):
            if self.closed_ttl_ms is not None and doc.get("stage") in (lifecycle.CLOSED, "void"):
                return [(doc["updated_ms"] + self.closed_ttl_ms, doc["case_id"], doc["version"], "purge")]
            return []
        timer = doc.get("timer")
        if timer is None or doc.get("suspended_ms") is not None:
            return []
        out: list[Timer] = []
        if not timer["yellow_fired"]:
            out.append((timer["yellow_ms"], doc["case_id"], timer["seq"], "yellow"))
        if not timer["red_fired"]:
            out.append((timer["deadline_ms"] + 1, doc["case_id"], timer["seq"], "red"))
        return out

    def _schedule(self, doc: CaseDoc) -> None:
        partition = doc.get("partition", 0)
        for timer in self.timers_of(doc):
            self.timers.push(partition, timer)

    def purge(self, closed_before_ms: int, partition: int | None = None) -> int:
        """Forget closed and void cases finished before the instant (their rows stay in the store), only
        ``partition``'s when given. Returns how many; re-delivered records of a purged case would open a new
        case. (O(cases): the lean case path purges by timer instead, ``closed_ttl_ms``.)"""
        purged = 0
        for case_id in list(self.cases):
            doc = self.cases.get(case_id)
            if doc is None or doc.get("open"):
                continue
            if partition is not None and doc.get("partition", 0) != partition:
                continue
            if doc.get("updated_ms", 0) >= closed_before_ms:
                continue
            self._forget(doc)
            purged += 1
        return purged

    def _forget(self, doc: CaseDoc) -> None:
        case_id = doc["case_id"]
        for source in doc.get("sources", []):
            source_id = source.split(":", 1)[1]
            if self.sources.get(source_id) == case_id:
                del self.sources[source_id]
        del self.cases[case_id]
        self._unindex(case_id)
        if self.on_change is not None:
            self.on_change(doc, None)

    def erase(self, pseudonyms: Iterable[str], request_id: str, partition: int | None = None) -> tuple[Outputs, int]:
        """Erasure of a caller (``streams erase``): their pseudonyms leave every case document (reporter
        keys, originator) of ``partition`` (every partition when None); the rewritten documents replace
        the old ones in the changelog, which compaction then drops. The case itself stays (its other
        reporters, its handling). Returns the outputs and how many cases changed."""
        gone = set(pseudonyms)
        out = Outputs()
        changed = 0
        for case_id in list(self.cases):
            doc0 = self.cases.get(case_id)
            if doc0 is None or (partition is not None and doc0.get("partition", 0) != partition):
                continue
            keys = doc0.get("reporter_keys", [])
            hit = [k for k in keys if k.split(":", 1)[-1] in gone]
            if not hit and doc0.get("origin_reporter") not in gone:
                continue
            doc = _clone(doc0)
            doc["reporter_keys"] = [f"{k.split(':', 1)[0]}:erased-{i}" if k in hit else k for i, k in enumerate(keys)]
            if doc.get("origin_reporter") in gone:
                doc["origin_reporter"] = "erased"
            self._commit(doc, [], f"erase:{request_id}", out)
            changed += 1
        return out, changed

    def next_due(self, partition: int | None = None) -> int | None:
        """Earliest pending timer instant (may be stale): lets a virtual clock jump between timers."""
        return self.timers.next_due(partition)

    def timers_pending(self) -> int:
        return self.timers.pending()

    # ------------------------------------------------------------ signals

    def on_signal(self, signal: Signal, partition: int = 0) -> Outputs:
        out = Outputs()
        known = self.sources.get(signal.source_id)
        # A re-delivered record changes nothing. Its case is found by the source index, or -- after a
        # crash that stored the case documents but not yet the index (two changelogs, not one write) --
        # by the id it opened or among the open cases near it: *every* one that holds the signal, not
        # only the one dedup would pick now. Two open cases can match one place, and once later reports
        # moved their last-signal times the nearer in time need not be the case the signal joined; the
        # replay then merged it into the other one (one report in two cases, found by the kill test).
        probe = self.index.probe(signal)
        nearby = self.index.candidates(signal, probe)
        own_id = make_case_id(signal)   # the id the signal opens a case with (and may have opened it with)
        for candidate in (known, own_id, *sorted(nearby)):
            if candidate is None:
                continue
            seen = self.cases.get(candidate)
            if seen is not None and signal.signal_id in seen.get("signal_ids", []):
                if known != candidate:
                    self.sources[signal.source_id] = candidate
                return out
        self.watermark_ms = max(self.watermark_ms, signal.ts_ms)
        case_id = self.index.match(signal, nearby, partition, probe)   # find(signal, self.live, partition)
        crowd_plan = self._crowd_plan(signal)
        if case_id is None and crowd_plan is not None and crowd_plan.implied(int(signal.extra_dict()["count"])) is None:
            return out   # a normal crowd count with no crowd case open: nothing to do
        before: CaseDoc | None = None
        if case_id is not None:
            before = self.cases[case_id]
            doc = _clone_for_merge(before)
            steps = self._merge(doc, signal)
            out.merged = 1
        else:
            doc = self._open(signal, partition, own_id)
            steps = self._auto_steps(doc, signal)
            if crowd_plan is not None:   # the response plan 三级响应预案 of the level the count calls for
                doc["crowd"] = crowd.start(crowd_plan, int(signal.extra_dict()["count"]), signal.ts_ms)
                doc["base_level"] = self.knowledge.route(signal.category_code, signal.context).level
                steps.append(self._plan_step(doc, crowd_plan, "up", None, signal.source_kind,
                                             signal.reporter_id or signal.source_id, signal.ts_ms))
        self.sources[signal.source_id] = doc["case_id"]
        self._commit(doc, steps, signal.signal_id, out, before=before)
        if case_id is None:
            self._probe_neighbours(doc, signal, out)
        if case_id is None and signal.source_kind == "sensor":
            out.notifications.append(self._notification(doc, "alarm", signal.ts_ms, signal.signal_id,
                                                        doc["departments"]))
        return out

    def _open(self, signal: Signal, partition: int, case_id: str) -> CaseDoc:
        location = Location(signal.lat, signal.lon, signal.cell, signal.community, signal.street,
                            signal.street_code, signal.district, signal.address, list(signal.context))
        route = self.knowledge.route(signal.category_code, signal.context, location)
        level = signal.level_hint if signal.level_hint in (1, 2, 3, 4) else route.level
        doc: CaseDoc = {
            "case_id": case_id, "version": 0, "partition": partition,
            "opened_ms": signal.ts_ms, "updated_ms": signal.ts_ms, "last_signal_ms": signal.ts_ms,
            "category_code": signal.category_code, "category_name": signal.category_name,
            "departments": list(route.departments), "level": int(level),
            # the instances serving this place, parallel to departments (KB routes without them: the kinds)
            "units": list(getattr(route, "units", None) or route.departments),
            "stage_limits": {k: [v[0], int(v[1])] for k, v in route.stage_limits.items()},
            "escalate_on_red": bool(route.escalate_on_red), "immediate": bool(route.immediate),
            "kb_version": route.kb_version or getattr(self.knowledge, "version", ""),
            "rule_id": getattr(route, "rule_id", ""),
            "origin": signal.source_kind, "origin_reporter": signal.reporter_id,
            "street": signal.street, "street_code": signal.street_code, "community": signal.community,
            "cell": signal.cell, "address": signal.address, "lat": signal.lat, "lon": signal.lon,
            "context": list(signal.context),
            "stage": "register", "open": True, "stage_started_ms": signal.ts_ms, "suspended_ms": None, "timer": None,
            "timer_seq": 0,
            "stages": {"discover": signal.ts_ms}, "lights": {},
            "reporters": 0, "reporter_keys": [], "sources": [], "signal_ids": [], "action_ids": [],
            "places": [], "devices": [],
            "rework_count": 0, "urge_count": 0, "return_count": 0, "escalations": 0,
            "quick_handled": False, "dispatched_by": "", "closed_ms": 0, "ever_red": False,
        }
        self._add_report(doc, signal)
        lifecycle.start_timer(doc, "register", signal.ts_ms, self.calendar)
        return doc

    def _add_report(self, doc: CaseDoc, signal: Signal) -> None:
        reporter = f"{signal.source_kind}:{signal.reporter_id or signal.source_id}"
        if reporter not in doc["reporter_keys"]:
            doc["reporter_keys"].append(reporter)
            doc["reporters"] = len(doc["reporter_keys"])
        source = f"{signal.source_kind}:{signal.source_id}"
        if len(doc["sources"]) < MAX_SOURCES and source not in doc["sources"]:
            doc["sources"].append(source)
        doc["signal_ids"] = (doc["signal_ids"] + [signal.signal_id])[-MAX_REMEMBERED:]
        doc["places"] = dedup.add_place(doc["places"], dedup.place_of(signal))
        device = dedup.device_of(signal)
        if device:
            doc["devices"] = dedup.unique(doc["devices"] + [device])
        doc["last_signal_ms"] = max(doc.get("last_signal_ms", signal.ts_ms), signal.ts_ms)

    def _auto_steps(self, doc: CaseDoc, signal: Signal) -> list[Step]:
        """发现, then what happens without anyone acting: self-registration, immediate dispatch,
        handled-on-the-spot inspector reports."""
        actor_kind, actor_id = signal.source_kind, signal.reporter_id or signal.source_id
        steps = [Step(signal.ts_ms, "", "register", "discover", actor_kind, actor_id,
                      detail={"source": f"{signal.source_kind}:{signal.source_id}"})]
        if signal.source_kind not in lifecycle.SELF_REGISTERING and not doc["immediate"] and not self.auto_dispatch:
            return steps  # a hotline call waits for the centre to accept (立案) it
        steps.append(lifecycle.move(doc, "dispatch", "register", actor_kind, actor_id, signal.ts_ms,
                                    self.calendar, done="register"))
        on_spot = (signal.source_kind == "inspector" and signal.handled_on_spot
                   and signal.photos and signal.after_photos)
        if on_spot:
            # handled on the spot with before/after photos: straight to verification (街镇快速处置)
            doc["quick_handled"] = True
            doc["dispatched_by"] = "street"
            steps.append(lifecycle.move(doc, "verify", "handled_on_spot", actor_kind, actor_id, signal.ts_ms,
                                        self.calendar, done="handle", photos=signal.photos,
                                        after_photos=signal.after_photos))
        elif doc["immediate"] or doc["level"] == 4 or self.auto_dispatch:
            steps.append(lifecycle.dispatch(doc, doc["departments"], SYSTEM, "auto", signal.ts_ms, self.calendar,
                                            immediate=doc["immediate"]))
        return steps

    def _merge(self, doc: CaseDoc, signal: Signal) -> list[Step]:
        self._add_report(doc, signal)
        actor_id = signal.reporter_id or signal.source_id
        steps = [lifecycle.stay(doc, "merge", signal.source_kind, actor_id, signal.ts_ms,
                                source=f"{signal.source_kind}:{signal.source_id}", reporters=doc["reporters"])]
        if doc.get("suspended_ms") is not None:
            # 挂账: a suspended case only gathers reports; escalation and registration wait for resume
            return steps
        plan = self._crowd_plan(signal) if doc.get("crowd") else None
        if plan is not None:
            # a crowd case follows its response plan: up with the count at once, down with hysteresis
            state, change = crowd.step(doc["crowd"], plan, int(signal.extra_dict()["count"]), signal.ts_ms)
            before = doc["crowd"]["level"]
            doc["crowd"] = state
            if change is not None:
                steps.append(self._plan_step(doc, plan, change, before, signal.source_kind, actor_id, signal.ts_ms))
        elif signal.level_hint in (1, 2, 3) and signal.level_hint < doc["level"]:
            # e.g. a crowd growing from 关注 to 管控: the case rises to the level the new report needs
            doc["level"] = signal.level_hint
            doc["escalations"] = doc.get("escalations", 0) + 1
            steps.append(lifecycle.stay(doc, "escalate", signal.source_kind, actor_id, signal.ts_ms,
                                        reason="level_hint", level=doc["level"]))
            steps[-1].notify.append("escalate")
        if doc["stage"] == "register" and signal.source_kind in lifecycle.SELF_REGISTERING:
            # a station/inspector/device confirms a waiting hotline call: registered 立案 now
            steps.append(lifecycle.move(doc, "dispatch", "register", signal.source_kind, actor_id,
                                        max(signal.ts_ms, doc["stage_started_ms"]), self.calendar, done="register"))
        return steps

    # ------------------------------------------------------------ across street boundaries

    def _probe_neighbours(self, doc: CaseDoc, signal: Signal, out: Outputs) -> None:
        """A new case near other streets asks them whether they hold the same problem already."""
        near = getattr(self.knowledge, "streets_near", None)
        if near is None or signal.lat is None or signal.lon is None:
            return
        home = home_of(doc["case_id"])
        radius = self.index.rules.rule_for(doc["category_name"]).radius_m
        for street in near(signal.lat, signal.lon, radius):
            if street != home:
                out.cross.append({"key": street, "kind": "probe", "case_id": doc["case_id"],
                                  "opened_ms": doc["opened_ms"], "signal": _signal_dict(signal)})

    def on_probe(self, probe: dict[str, Any], partition: int = 0) -> Outputs:
        """Another partition's new case ``probe["case_id"]`` from ``probe["signal"]``: one case of ours the
        same? The older wins; the loser's own partition voids it (作废) into the winner."""
        out = Outputs()
        signal = Signal.from_dict(probe["signal"])
        self.watermark_ms = max(self.watermark_ms, signal.ts_ms)
        local_id = self.index.match(signal, self.index.candidates(signal), partition)
        if local_id is None or local_id == probe["case_id"]:
            return out
        local = self.cases[local_id]
        if (local["opened_ms"], local_id) <= (probe["opened_ms"], probe["case_id"]):
            # ours is older: it takes the report now, and the other case is voided into it
            if signal.signal_id not in local.get("signal_ids", []):
                doc = _clone(local)
                steps = self._merge(doc, signal)
                self.sources[signal.source_id] = local_id
                self._commit(doc, steps, f"probe:{signal.signal_id}", out, before=local)
                out.merged = 1
            out.cross.append({"key": home_of(probe["case_id"]), "kind": "void_duplicate", "case_id": probe["case_id"],
                              "into": local_id, "ts_ms": signal.ts_ms})
        else:
            self._void_into(local, probe["case_id"], signal.ts_ms, out)
        return out

    def on_void_duplicate(self, item: dict[str, Any], partition: int = 0) -> Outputs:
        """Void our case ``item["case_id"]`` into the older case ``item["into"]`` of another partition."""
        out = Outputs()
        doc = self.cases.get(item["case_id"])
        if doc is not None and doc.get("open"):
            self._void_into(doc, item["into"], int(item["ts_ms"]), out)
        return out

    def _void_into(self, doc0: CaseDoc, into: str, ts_ms: int, out: Outputs) -> None:
        """Void the duplicate and move its reports to ``into`` (the absorb input): a report stays in one case."""
        doc = _clone(doc0)
        at = max(ts_ms, doc.get("stage_started_ms", 0), doc.get("suspended_ms") or 0)
        steps = lifecycle.apply_action(doc, {"action_id": f"dup:{into}", "case_id": doc["case_id"], "action": "void",
                                             "actor_kind": "center", "actor_id": SYSTEM, "ts": iso_local(at),
                                             "note": f"duplicate of {into} across a street boundary"},
                                       at, self.calendar, self.policy)
        out.cross.append({"key": home_of(into), "kind": "absorb", "case_id": into, "from": doc["case_id"],
                          "ts_ms": at, "reporter_keys": doc["reporter_keys"], "sources": doc["sources"],
                          "signal_ids": doc["signal_ids"], "places": doc["places"], "devices": doc["devices"],
                          "last_signal_ms": doc.get("last_signal_ms", doc["opened_ms"])})
        doc["duplicate_of"] = into
        doc["sources"] = []   # moved: the signal ids stay, so a re-delivered report is still recognised here
        self._commit(doc, steps, f"void-into:{into}", out, before=doc0)

    def on_absorb(self, item: dict[str, Any], partition: int = 0) -> Outputs:
        """The reports of a voided duplicate (another partition's case) join our case ``item["case_id"]``."""
        out = Outputs()
        doc0 = self.cases.get(item["case_id"])
        if doc0 is None:
            return out  # purged meanwhile: the duplicate's rows stay, void, in the store
        if doc0.get("duplicate_of"):   # voided into an older case meanwhile: the reports go on to that one
            into = doc0["duplicate_of"]
            out.cross.append({**item, "key": home_of(into), "kind": "absorb", "case_id": into})
            return out
        doc = _clone(doc0)
        for key in item["reporter_keys"]:
            if key not in doc["reporter_keys"]:
                doc["reporter_keys"].append(key)
        doc["reporters"] = len(doc["reporter_keys"])
        doc["sources"] = dedup.unique(doc["sources"] + list(item["sources"]))[:MAX_SOURCES]
        doc["signal_ids"] = dedup.unique(doc["signal_ids"] + list(item["signal_ids"]))[-MAX_REMEMBERED:]
        for place in item["places"]:
            doc["places"] = dedup.add_place(doc["places"], place)
        doc["devices"] = dedup.unique(doc["devices"] + list(item["devices"]))
        doc["last_signal_ms"] = max(doc.get("last_signal_ms", 0), int(item["last_signal_ms"]))
        if doc == doc0:
            return out  # absorbed before (a re-delivered input)
        at = max(int(item["ts_ms"]), doc.get("stage_started_ms", 0))
        steps = [lifecycle.stay(doc, "absorb", SYSTEM, SYSTEM, at, duplicate=item["from"], reporters=doc["reporters"])]
        for source in item["sources"]:   # actions naming these reports reach this case now
            self.sources[source.split(":", 1)[1]] = doc["case_id"]
        self._commit(doc, steps, f"absorb:{item['from']}", out, before=doc0)
        return out

    # ------------------------------------------------------------ crowd response plans

    def _crowd_plan(self, signal: Signal) -> crowd.CrowdPlan | None:
        """The response plan of a crowd count's camera area (None: not a crowd count, or the KB has no plans)."""
        facts = signal.extra_dict() if signal.source_kind == "camera" and signal.extra else {}
        if "count" not in facts or facts.get("count") is None:
            return None
        plan_of = getattr(self.knowledge, "crowd_plan", None)
        return plan_of(facts.get("area")) if plan_of is not None else None

    def _plan_step(self, doc: CaseDoc, plan: crowd.CrowdPlan, change: str, before: int | None, actor_kind: str,
                   actor_id: str, ts_ms: int) -> Step:
        """The case takes its plan's new level (stood down: the KB route's level) and tells the departments of
        that level (stood down: those of the level left) what is now in force."""
        state = doc["crowd"]
        level = state["level"]
        told = plan.levels[level] if level is not None else plan.levels[before] if before is not None else None
        doc["level"] = level if level is not None else doc.get("base_level", doc["level"])
        if change == "up" and before is not None:
            doc["escalations"] = doc.get("escalations", 0) + 1
        action = {"up": "response_level", "down": "step_down", "clear": "stand_down"}[change]
        step = lifecycle.stay(doc, action, actor_kind, actor_id, ts_ms, plan_level=level,
                              plan_name=crowd.LEVEL_NAMES.get(level or 0, "解除"), from_level=before,
                              count=state["count"], area=plan.area or None,
                              actions=list(told.actions) if told and level is not None else [],
                              plan_departments=list(told.departments) if told else list(doc["departments"]))
        step.notify.append("response_level")
        return step

    def step_down(self, doc: CaseDoc, actor_kind: str, actor_id: str, ts_ms: int) -> list[Step]:
        """The centre's action 降级: a crowd case's plan one level down (from 关注 it stands down); another case
        one response level back towards its KB route's level."""
        if doc.get("crowd"):
            plan_of = getattr(self.knowledge, "crowd_plan", None)
            plan = plan_of(doc["crowd"]["area"] or None) if plan_of is not None else None
            if plan is None or doc["crowd"]["level"] is None:
                raise Rejected("the crowd plan has already stood down")
            before = doc["crowd"]["level"]
            doc["crowd"], change = crowd.step_down_by_action(doc["crowd"])
            return [self._plan_step(doc, plan, change, before, actor_kind, actor_id, ts_ms)]
        base = doc.get("base_level") or self.knowledge.route(doc["category_code"], doc.get("context", [])).level
        if doc["level"] >= base:
            raise Rejected(f"the case is at its KB level {doc['level']}; nothing to step down")
        doc["level"] += 1
        step = lifecycle.stay(doc, "step_down", actor_kind, actor_id, ts_ms, level=doc["level"])
        step.notify.append("response_level")
        return [step]

    # ------------------------------------------------------------ actions

    def on_action(self, action: CaseAction, partition: int = 0) -> Outputs:
        out = Outputs()
        # a note may quote a phone number: transitions and rejections keep it masked
        action = cast(CaseAction, mask_fields(action))
        case_id = action.get("case_id") or self.sources.get(action.get("source_id") or "")
        doc0 = self.cases.get(case_id) if case_id else None
        try:
            ts_ms = iso_to_ms(action["ts"])
        except BadTimestamp as exc:
            out.rejections.append(self._rejection(action, case_id, str(exc), 0))
            return out
        if doc0 is None:
            what = f"case {action['case_id']}" if action.get("case_id") else f"source {action.get('source_id')}"
            out.rejections.append(self._rejection(action, case_id, f"unknown {what}", ts_ms))
            return out
        if action["action_id"] in doc0.get("action_ids", []):
            return out  # a re-delivered action changes nothing
        doc = _clone(doc0)
        try:
            if action["action"] == "step_down":
                if doc["stage"] in ("closed", "void"):
                    raise Rejected(f"case is {doc['stage']}; no action is allowed")
                try:   # who may: the KB's authority section, as for every action
                    self.policy.decide(doc, action["actor_kind"], action["actor_id"], "step_down")
                except NotAuthorised as exc:
                    raise Rejected(exc.reason) from None
                steps = self.step_down(doc, action["actor_kind"], action["actor_id"], ts_ms)
            else:
                steps = lifecycle.apply_action(doc, action, ts_ms, self.calendar, self.policy)
        except Rejected as exc:
            out.rejections.append(self._rejection(action, case_id, exc.reason, ts_ms))
            return out
        if doc["departments"] != doc0["departments"]:
            self._name_units(doc)
        doc["action_ids"] = (doc["action_ids"] + [action["action_id"]])[-MAX_REMEMBERED:]
        self._commit(doc, steps, action["action_id"], out, before=doc0)
        return out

    @staticmethod
    def _rejection(action: CaseAction, case_id: str | None, reason: str, ts_ms: int) -> Rejection:
        return {"action_id": action.get("action_id", ""), "case_id": case_id, "reason": reason,
                "ts_ms": ts_ms, "action": json.dumps(action, ensure_ascii=False, sort_keys=True)}

    # ------------------------------------------------------------ timers

    def on_tick(self, now_ms: int, partition: int | None = None) -> Outputs:
        """Fire the timers due at ``now_ms`` (caller's clock): yellow, then red with 催办/上报, and the
        purge of cases closed ``closed_ttl_ms`` ago; drop from the index the cases no report can join."""
        out = Outputs()
        partitions = [partition] if partition is not None else self.timers.partitions()
        for p in partitions:
            for _, case_id, seq, kind in list(self.timers.pop_due(p, now_ms)):
                if kind == "purge":
                    self._purge_case(case_id, seq)
                else:
                    self._fire(case_id, seq, kind, now_ms, out)
        self.evict()
        return out

    def _purge_case(self, case_id: str, version: int) -> None:
        doc = self.cases.get(case_id)
        if doc is None or doc.get("open") or doc.get("version") != version:
            return  # gone already, reopened, or changed since (a later purge timer is queued)
        self._forget(doc)

    def _fire(self, case_id: str, seq: int, kind: str, now_ms: int, out: Outputs) -> None:
        doc0 = self.cases.get(case_id)
        if doc0 is None or not doc0.get("open") or doc0.get("suspended_ms") is not None:
            return
        timer0 = doc0.get("timer")
        if timer0 is None or timer0["seq"] != seq:
            return  # the stage moved on: a stale entry
        if kind == "yellow" and (timer0["yellow_fired"] or timer0["yellow_ms"] > now_ms):
            return  # already fired, or pushed back by an extension (a new entry exists)
        if kind == "red" and (timer0["red_fired"] or timer0["deadline_ms"] >= now_ms):
            return
        doc = _clone(doc0)
        timer = doc["timer"]
        assert timer is not None  # a copy of doc0, whose timer was checked above
        stage = timer["stage"]
        lights = doc.setdefault("lights", {})
        cause = f"timer{seq}"
        at = timer["yellow_ms"] if kind == "yellow" else timer["deadline_ms"] + 1  # event time of the light
        steps: list[Step] = []
        if kind == "yellow":
            timer["yellow_fired"] = True
            lights[stage] = sla.worst(lights.get(stage, sla.GREEN), sla.YELLOW)
            self._alert(doc, out, cause, at, stage, sla.YELLOW, "sla_yellow")
        else:
            timer["red_fired"] = True
            timer["yellow_fired"] = True
            doc["ever_red"] = True
            lights[stage] = sla.RED
            self._alert(doc, out, cause, at, stage, sla.RED, "sla_red")
            doc["urge_count"] = doc.get("urge_count", 0) + 1  # 催办 to the department
            steps.append(lifecycle.stay(doc, "urge", SYSTEM, "sla", at, reason="overdue"))
            steps[-1].notify.append("urge")
            if doc.get("escalate_on_red") and doc.get("level", 4) > 1:
                doc["level"] -= 1
                doc["escalations"] = doc.get("escalations", 0) + 1
                steps.append(lifecycle.stay(doc, "escalate", SYSTEM, "sla", at, reason="overdue", level=doc["level"]))
                steps[-1].notify.append("escalate")
        self._commit(doc, steps, cause, out, schedule=False, before=doc0)
        # the other timer of this stage (red after yellow) is still queued

    def _alert(self, doc: CaseDoc, out: Outputs, cause: str, ts_ms: int, stage: str, light: str, kind: str) -> None:
        event_id = _hash(doc["case_id"], cause, kind)
        out.sla_alerts.append({"alert_id": event_id, "case_id": doc["case_id"], "ts_ms": ts_ms, "stage": stage,
                               "light": light, "kind": kind, "departments": list(doc["departments"]),
                               "deadline_ms": _deadline_ms(doc)})
        out.notifications.append(self._notification(doc, kind, ts_ms, cause, doc["departments"]))

    # ------------------------------------------------------------ outputs

    def _commit(self, doc: CaseDoc, steps: list[Step], cause: str, out: Outputs, schedule: bool = True,
                before: CaseDoc | None = None) -> None:
        doc["version"] = doc.get("version", 0) + 1
        doc["updated_ms"] = max([doc.get("updated_ms", 0)] + [s.ts_ms for s in steps])
        self.cases[doc["case_id"]] = doc  # write back: a Faust table persists assignments only
        self._index(doc)
        if schedule or not doc.get("open"):
            self._schedule(doc)
        if self.on_change is not None:
            self.on_change(before, doc)
        for i, step in enumerate(steps):
            event_id = _hash(doc["case_id"], cause, i, step.action)
            step.detail["seq"] = doc["version"] * 100 + i  # orders the steps of one instant
            out.case_transitions.append(self._transition_row(doc, step, event_id))
            if step.dispatched:
                out.dispatches.append(self._dispatch_row(doc, step, event_id))
            for kind in step.notify:
                departments = doc["departments"]
                if kind == "escalate":
                    departments = [CENTRE_OF_LEVEL.get(doc["level"], lifecycle.DISTRICT_CENTRE)]
                if kind == "response_level":
                    plan_departments = step.detail.get("plan_departments")
                    if isinstance(plan_departments, list):
                        departments = [str(d) for d in plan_departments]
                if kind in ("urge", "escalate"):
                    out.sla_alerts.append({"alert_id": _hash(event_id, kind), "case_id": doc["case_id"],
                                           "ts_ms": step.ts_ms, "stage": step.from_stage, "light": step.light,
                                           "kind": kind, "departments": list(departments),
                                           "deadline_ms": _deadline_ms(doc)})
                note = self._notification(doc, kind, step.ts_ms, f"{event_id}", departments)
                if kind == "response_level":
                    note["plan"] = {k: step.detail.get(k) for k in ("plan_level", "plan_name", "from_level",
                                                                     "count", "area", "actions")}
                out.notifications.append(note)
        out.cases.append(self.case_row(doc))

    def _name_units(self, doc: CaseDoc) -> None:
        """A centre dispatched to other departments (kinds or named instances): kinds in ``departments``,
        the instances serving the case's place in ``units``."""
        departments_of = getattr(self.knowledge, "departments_of", None)
        if departments_of is None:
            doc["units"] = list(doc["departments"])
            return
        doc["departments"], doc["units"] = departments_of(doc["departments"], doc.get("street"), doc.get("community"))

    def _notification(self, doc: CaseDoc, kind: str, ts_ms: int, cause: str,
                      departments: list[str]) -> Notification:
        timer = doc.get("timer")
        return {"kind": kind, "case_id": doc["case_id"], "ts_ms": ts_ms, "departments": list(departments),
                "units": units_of(doc, departments),
                "category_code": doc["category_code"], "category_name": doc["category_name"],
                "level": doc["level"], "deadline_ms": timer["deadline_ms"] if timer else None,
                "address": doc.get("address"), "lat": doc.get("lat"), "lon": doc.get("lon"),
                "cell": doc.get("cell"), "street": doc.get("street"),
                "event_id": _hash(doc["case_id"], cause, kind, "notify")}

    def _transition_row(self, doc: CaseDoc, step: Step, event_id: str) -> TransitionRow:
        return {"event_id": event_id, "case_id": doc["case_id"], "ts_ms": step.ts_ms,
                "from_stage": step.from_stage, "to_stage": step.to_stage, "action": step.action,
                "actor_kind": step.actor_kind or "", "actor_id": step.actor_id or "",
                "spent_ms": int(step.spent_ms), "clock": step.clock, "light": step.light,
                "category_code": doc["category_code"], "street": doc.get("street") or "",
                "departments": list(doc["departments"]),
                "detail": _detail_json(step.detail)}

    def _dispatch_row(self, doc: CaseDoc, step: Step, event_id: str) -> DispatchRow:
        units = units_of(doc, doc["departments"])
        return {"dispatch_id": event_id, "case_id": doc["case_id"], "ts_ms": step.ts_ms,
                "departments": list(doc["departments"]), "primary_department": doc["departments"][0],
                "units": units, "primary_unit": units[0],
                "level": doc["level"], "category_code": doc["category_code"],
                "category_name": doc["category_name"], "street": doc.get("street") or "",
                "deadline_ms": _deadline_ms(doc), "kb_version": doc.get("kb_version") or ""}

    @staticmethod
    def current_light(doc: CaseDoc) -> str:
        if not doc.get("open"):
            return sla.worst(*doc.get("lights", {}).values()) if doc.get("lights") else sla.GREEN
        timer = doc.get("timer")
        return lifecycle.timer_light(timer, doc.get("updated_ms", 0)) if timer else sla.GREEN

    @classmethod
    def case_row(cls, doc: CaseDoc) -> CaseRow:
        """The ClickHouse ``cases`` row of a document (ReplacingMergeTree by ``version``)."""
        timer = doc.get("timer")
        closed = doc["stage"] == lifecycle.CLOSED
        return {
            "case_id": doc["case_id"], "version": doc["version"], "updated_ms": doc["updated_ms"],
            "opened_ms": doc["opened_ms"], "category_code": doc["category_code"],
            "category_name": doc["category_name"], "departments": list(doc["departments"]),
            "units": units_of(doc, doc["departments"]),
            "level": doc["level"], "status": lifecycle.status_of(doc), "origin": doc.get("origin") or "",
            "street": doc.get("street") or "", "street_code": doc.get("street_code") or "",
            "community": doc.get("community") or "", "cell": doc.get("cell") or "",
            "address": doc.get("address") or "", "lat": doc.get("lat"), "lon": doc.get("lon"),
            "reporters": doc["reporters"], "sources": list(doc["sources"]), "light": cls.current_light(doc),
            "deadline_ms": int(timer["deadline_ms"]) if timer else 0,
            "rework_count": doc.get("rework_count", 0), "urge_count": doc.get("urge_count", 0),
            "quick_handled": int(bool(doc.get("quick_handled"))), "dispatched_by": doc.get("dispatched_by") or "",
            "closed_ms": doc.get("closed_ms") or 0, "on_time": int(closed and not doc.get("ever_red")),
            "handling_ms": (doc["closed_ms"] - doc["opened_ms"]) if closed else 0,
            "kb_version": doc.get("kb_version") or "",
            "stages": _stages_json(doc.get("stages", {})),
        }


def units_of(doc: CaseDoc, departments: list[str]) -> list[str]:
    """The instances of ``departments`` on this case (a department the case's units do not name, e.g.
    the centre an escalation notifies, or a document from before instances: its own name)."""
    by_kind = dict(zip(doc["departments"], doc.get("units") or doc["departments"], strict=False))
    return [by_kind.get(d, d) for d in departments]


def case_summary(doc: CaseDoc) -> CaseSummary:
    """One line of ``streams replay --json``: the case as an officer reads it."""
    stages = {s: iso_local(doc["stages"][s]) for s in STAGES if s in doc.get("stages", {})}
    lights = dict(doc.get("lights", {}))
    timer = doc.get("timer")
    if doc.get("open") and timer:
        lights[timer["stage"]] = sla.worst(lights.get(timer["stage"], sla.GREEN),
                                           lifecycle.timer_light(timer, doc.get("updated_ms", 0)))
    return {"case_id": doc["case_id"], "category_name": doc["category_name"], "departments": list(doc["departments"]),
            "level": doc["level"], "status": lifecycle.status_of(doc), "stages": stages,
            "lights": {s: lights[s] for s in STAGES if s in lights}, "reporters": doc["reporters"],
            "sources": list(doc["sources"])}
