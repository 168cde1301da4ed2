"""``streams reconcile``: the operator's proof that nothing was lost (docs/reliability.md).

For a time range it counts, per input topic and partition, the Kafka records in it (by offsets:
``offsets_for_times`` of the range's ends) and what became of each in ClickHouse's ``input_ledger``
(one row per input record, written with its outputs: its primary output's topic, ``dlq`` or
``none`` for filtered records such as normal readings). Every input must have exactly one ledger
row; a position without one is *missing* and is listed as offset ranges. Dead-lettered inputs must
have their ``dead_letters`` row.

Then, for the cases opened in the range, it checks the outputs against the case state and the
transitions: every dispatch transition has its dispatch row and no dispatch row lacks one; every
case whose state says it was dispatched has a dispatch; every red timer that fired (an ``urge`` step
by the SLA clock) has its ``sla_red`` alert and the reverse; the urges a case counts match its urge
steps; an open case whose light is yellow or red has the alert for its current deadline; no alert
is doubled; no report sits in two cases. Each difference is named.

Numbers are final once the ClickHouse sink has caught up (its consumer lag is 0): run it after
the range has settled.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.bus import clients
from streams.bus.rules import InputRules
from streams.bus.topics import CASE_ACTIONS, CASE_INPUTS, RAW_SCHEMAS, TopicNames
from streams.settings import Settings

# Inputs with a ledger: the raw feeds (agents and lean consumers), the actions router, the lifecycle.
LEDGER_TOPICS: tuple[str, ...] = (*RAW_SCHEMAS, CASE_INPUTS)
if CASE_ACTIONS not in LEDGER_TOPICS:  # pragma: no cover - RAW_SCHEMAS lists it today
    LEDGER_TOPICS = (*LEDGER_TOPICS, CASE_ACTIONS)
MAX_LISTED = 10  # missing ranges / example ids listed per finding


@dataclass
class PartitionRange:
    topic: str        # logical
    partition: int
    start: int        # first offset in the range
    end: int          # first offset after it

    @property
    def records(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class TopicReport:
    topic: str
    kafka: int = 0                       # records in the range
    accounted: int = 0                   # distinct ledger rows in the range
    outcomes: dict[str, int] = field(default_factory=dict)
    replays_absorbed: int = 0            # ledger rows written more than once (at least: merges may have folded some)
    dead_letter_rows: int = 0            # dead_letters rows for the range
    missing: list[str] = field(default_factory=list)   # "partition p: offsets a-b"

    @property
    def unaccounted(self) -> int:
        return self.kafka - self.accounted

    @property
    def ok(self) -> bool:
        return self.unaccounted == 0 and self.dead_letter_rows == self.outcomes.get("dlq", 0)


@dataclass
class Finding:
    check: str
    expected: int
    found: int
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


@dataclass
class Reconciliation:
    since_ms: int
    until_ms: int
    inputs: list[TopicReport]
    outputs: list[Finding]
    cases: int

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.inputs) and all(f.ok for f in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        for report, row in zip(self.inputs, doc["inputs"], strict=True):
            row["unaccounted"] = report.unaccounted
            row["ok"] = report.ok
        for finding, row in zip(self.outputs, doc["outputs"], strict=True):
            row["ok"] = finding.ok
        return doc

    def text(self) -> str:
        lines = [f"inputs (Kafka timestamps {self.since_ms} .. {self.until_ms})",
                 f"  {'topic':<18} {'kafka':>8} {'ledger':>8} {'missing':>8} {'replayed':>8} {'dead':>6}  outcomes"]
        for t in self.inputs:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t.outcomes.items()))
            lines.append(f"  {t.topic:<18} {t.kafka:>8} {t.accounted:>8} {t.unaccounted:>8} "
                         f"{t.replays_absorbed:>8} {t.dead_letter_rows:>6}  {outcomes}")
            lines += [f"    MISSING {m}" for m in t.missing]
            if t.dead_letter_rows != t.outcomes.get("dlq", 0):
                lines.append(f"    DEAD LETTERS: ledger says {t.outcomes.get('dlq', 0)}, dead_letters has "
                             f"{t.dead_letter_rows}")
        lines.append(f"outputs (cases opened in the range or the event-time window before it: {self.cases})")
        for f in self.outputs:
            mark = "ok" if f.ok else "DIFFERENCE"
            lines.append(f"  {f.check:<52} expected {f.expected:>6}  found {f.found:>6}  {mark}")
            lines += [f"    {d}" for d in f.differences]
        lines.append("reconciled: nothing lost, nothing doubled" if self.ok else "NOT reconciled: see above")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- Kafka

def kafka_ranges(settings: Settings, topics: Iterable[str], since_ms: int, until_ms: int) -> list[PartitionRange]:
    """Per partition, the offsets of the first record at or after ``since_ms`` and at or after ``until_ms``."""
    from kafka import KafkaConsumer, TopicPartition

    names = TopicNames(settings.topic_prefix)
    consumer = KafkaConsumer(**clients.offsets_consumer(settings), enable_auto_commit=False)
    try:
        ranges: list[PartitionRange] = []
        for logical in topics:
            physical = names.name(logical)
            partitions = consumer.partitions_for_topic(physical) or set()
            tps = [TopicPartition(physical, p) for p in sorted(partitions)]
            if not tps:
                continue
            first, last = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
            at_since = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            at_until = consumer.offsets_for_times(dict.fromkeys(tps, until_ms))
            for tp in tps:
                start = at_since[tp].offset if at_since.get(tp) is not None else last[tp]
                end = at_until[tp].offset if at_until.get(tp) is not None else last[tp]
                ranges.append(PartitionRange(logical, tp.partition, max(start, first[tp]), max(end, first[tp])))
        return ranges
    finally:
        consumer.close()


# ----------------------------------------------------------------------------------- ClickHouse

def _ranges_of(offsets: list[int], start: int, end: int) -> list[tuple[int, int]]:
    """The offsets in [start, end) that are not in the sorted list ``offsets``, as inclusive ranges."""
    gaps: list[tuple[int, int]] = []
    expected = start
    for offset in offsets:
        if offset > expected:
            gaps.append((expected, offset - 1))
        expected = max(expected, offset + 1)
    if expected < end:
        gaps.append((expected, end - 1))
    return gaps


def account_inputs(store: Any, ranges: list[PartitionRange]) -> list[TopicReport]:
    reports: dict[str, TopicReport] = {}
    for r in ranges:
        report = reports.setdefault(r.topic, TopicReport(r.topic))
        report.kafka += r.records
        if not r.records:
            continue
        where = "topic = %(topic)s AND partition = %(partition)s AND offset >= %(start)s AND offset < %(end)s"
        params = {"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end}
        distinct = 0
        for row in store.query(f"SELECT outcome, count() AS n FROM input_ledger FINAL WHERE {where} "
                               "GROUP BY outcome", params):
            report.outcomes[row["outcome"]] = report.outcomes.get(row["outcome"], 0) + int(row["n"])
            distinct += int(row["n"])
        written = store.query(f"SELECT count() AS n FROM input_ledger WHERE {where}", params)[0]["n"]
        report.accounted += distinct
        report.replays_absorbed += max(0, int(written) - distinct)
        report.dead_letter_rows += int(store.query(
            f"SELECT count() AS n FROM dead_letters FINAL WHERE {where}", params)[0]["n"])
        if distinct < r.records and len(report.missing) < MAX_LISTED:
            offsets = [int(x["offset"]) for x in store.query(
                f"SELECT DISTINCT offset FROM input_ledger WHERE {where} ORDER BY offset", params)]
            for a, b in _ranges_of(offsets, r.start, r.end)[:MAX_LISTED - len(report.missing)]:
                report.missing.append(f"partition {r.partition}: offsets {a}-{b} ({b - a + 1})")
    return [reports[t] for t in sorted(reports)]


def check_outputs(store: Any, since_ms: int, until_ms: int) -> tuple[int, list[Finding]]:
    """The lifecycle's outputs for the cases opened in the range, against their state and transitions."""
    params = {"since": since_ms, "until": until_ms}
    in_range = "case_id IN (SELECT case_id FROM cases WHERE opened_ms >= %(since)s AND opened_ms < %(until)s)"
    cases = store.query(
        "SELECT case_id, status, light, deadline_ms, urge_count, dispatched_by, quick_handled, sources "
        "FROM cases FINAL WHERE opened_ms >= %(since)s AND opened_ms < %(until)s", params)
    transitions = store.query(
        f"SELECT event_id, case_id, ts_ms, action, actor_id, from_stage FROM case_transitions FINAL WHERE {in_range}",
        params)
    dispatches = store.query(f"SELECT dispatch_id, case_id FROM dispatches FINAL WHERE {in_range}", params)
    alerts = store.query(
        f"SELECT alert_id, case_id, ts_ms, stage, kind, deadline_ms FROM sla_alerts FINAL WHERE {in_range}", params)
    findings: list[Finding] = []

    # 派遣: a dispatch transition and its dispatch row share one id
    dispatch_steps = {t["event_id"]: t["case_id"] for t in transitions if t["action"] == "dispatch"}
    dispatch_rows = {d["dispatch_id"]: d["case_id"] for d in dispatches}
    findings.append(_both_ways("dispatch transitions ↔ dispatch rows", dispatch_steps, dispatch_rows,
                               "dispatch step without its dispatch row", "dispatch row without a dispatch step"))
    dispatched = [c for c in cases if c["dispatched_by"] and not c["quick_handled"]]
    with_rows = set(dispatch_rows.values())
    findings.append(Finding("dispatched cases (state) ↔ a dispatch each", len(dispatched),
                            sum(1 for c in dispatched if c["case_id"] in with_rows),
                            [f"case {c['case_id']} was dispatched (state) but has no dispatch row"
                             for c in dispatched if c["case_id"] not in with_rows][:MAX_LISTED]))

    # SLA: a red timer that fires writes an `urge` step by the clock and an sla_red alert at the same instant
    red_steps = Counter((t["case_id"], int(t["ts_ms"])) for t in transitions
                        if t["action"] == "urge" and t["actor_id"] == "sla")
    red_alerts = Counter((a["case_id"], int(a["ts_ms"])) for a in alerts if a["kind"] == "sla_red")
    findings.append(_counts("fired red timers (urge steps) ↔ sla_red alerts", red_steps, red_alerts,
                            "red timer fired without its alert", "sla_red alert without a fired timer"))
    urge_steps = Counter(t["case_id"] for t in transitions if t["action"] == "urge")
    urge_state = Counter({c["case_id"]: int(c["urge_count"]) for c in cases if int(c["urge_count"])})
    findings.append(_counts("urges counted in the case state ↔ urge steps", urge_state, urge_steps,
                            "urges in the state without their steps", "urge steps beyond the state's count"))
    lights: Counter[str] = Counter()
    have = {(a["case_id"], a["kind"], int(a["deadline_ms"])) for a in alerts}
    missing_lights = []
    for c in cases:
        if c["status"] in ("closed", "void", "suspended") or c["light"] not in ("yellow", "red"):
            continue
        for kind in (("sla_yellow",) if c["light"] == "yellow" else ("sla_yellow", "sla_red")):
            lights[kind] += 1
            if (c["case_id"], kind, int(c["deadline_ms"])) not in have:
                missing_lights.append(f"case {c['case_id']} shows {c['light']} but has no {kind} alert "
                                      f"for its deadline {c['deadline_ms']}")
    findings.append(Finding("open cases' yellow/red lights ↔ their alerts", sum(lights.values()),
                            sum(lights.values()) - len(missing_lights), missing_lights[:MAX_LISTED]))
    doubled = Counter((a["case_id"], a["kind"], a["stage"], int(a["ts_ms"])) for a in alerts)
    findings.append(Finding("SLA alerts not doubled", len(doubled), len(alerts),
                            [f"{k[1]} for case {k[0]} stage {k[2]} at {k[3]}: {n} alerts"
                             for k, n in doubled.items() if n > 1][:MAX_LISTED]))

    # dedup: one report, one case
    owners: dict[str, list[str]] = {}
    for c in cases:
        for source in c["sources"]:
            owners.setdefault(source, []).append(c["case_id"])
    findings.append(Finding("each report in exactly one case", len(owners),
                            sum(1 for v in owners.values() if len(v) == 1),
                            [f"report {s} is in cases {', '.join(v)}" for s, v in owners.items()
                             if len(v) > 1][:MAX_LISTED]))
    return len(cases), findings


def _both_ways(check: str, expected: dict[str, str], found: dict[str, str], missing_text: str,
               extra_text: str) -> Finding:
    differences = [f"{missing_text}: {i} (case {expected[i]})" for i in sorted(set(expected) - set(found))]
    differences += [f"{extra_text}: {i} (case {found[i]})" for i in sorted(set(found) - set(expected))]
    return Finding(check, len(expected), len(found), differences[:MAX_LISTED])


def _counts(check: str, expected: Counter, found: Counter, missing_text: str, extra_text: str) -> Finding:
    differences = []
    for key in sorted(set(expected) | set(found), key=str):
        if expected[key] > found[key]:
            differences.append(f"{missing_text}: {key} ({expected[key]} vs {found[key]})")
        elif found[key] > expected[key]:
            differences.append(f"{extra_text}: {key} ({found[key]} vs {expected[key]})")
    return Finding(check, sum(expected.values()), sum(found.values()), differences[:MAX_LISTED])


def reconcile(settings: Settings, store: Any, since_ms: int, until_ms: int,
              topics: Iterable[str] = LEDGER_TOPICS, cases_since_ms: int | None = None) -> Reconciliation:
    """Inputs by Kafka timestamp in [since, until); outputs of the cases opened (event time) in
    [cases_since, until) -- by default since minus the event-time window, which covers every
    case an input of the range can have opened or changed."""
    ranges = kafka_ranges(settings, topics, since_ms, until_ms)
    inputs = account_inputs(store, ranges)
    if cases_since_ms is None:
        cases_since_ms = since_ms - InputRules.from_settings(settings).max_age_ms
    cases, outputs = check_outputs(store, cases_since_ms, until_ms)
    return Reconciliation(since_ms, until_ms, inputs, outputs, cases)


def dumps(result: Reconciliation) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
