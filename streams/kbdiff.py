"""``streams replay FILE --kb NEW --diff``: what a knowledge-base change would change in recorded history.

The same recorded events are replayed twice without a store — under the current (or ``--base-kb``)
knowledge base and under the new one — and the resulting cases are compared one by one (case ids are
deterministic: the first report of a case names it). For every case whose category, departments,
level, deadlines (stage limits and the open stage's deadline) or lights (per stage, at the end of the
replay) differ, the report shows before and after; it counts the changes by the rule that decides
the case under the new KB (and the rule before, when that differs) and by field, and lists examples.
Cases that exist under one KB only (a report merged differently, or sent to triage) are listed too.
This is the officer's check before a KB goes live.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.cases.engine import case_summary, iso_local
from streams.core.cases.model import CaseDoc

FIELDS = ("category", "departments", "level", "deadlines", "lights")
_UNITS = ((1440, "d"), (60, "h"), (1, "m"))


def limit_text(clock: str, minutes: int) -> str:
    """A stage limit as the KB writes it: (work_days, 4320) -> '3d work_days'."""
    for size, unit in _UNITS:
        if minutes % size == 0:
            return f"{minutes // size}{unit} {clock}"
    return f"{minutes}m {clock}"  # pragma: no cover - the loop always returns (size 1)


def case_view(doc: CaseDoc) -> dict[str, Any]:
    """The fields a KB change can move, in the form the report prints."""
    summary = case_summary(doc)
    timer = doc.get("timer") if doc.get("open") else None
    limits = {stage: limit_text(str(clock), int(minutes))  # stage_limits: stage -> [clock, minutes]
              for stage, (clock, minutes) in doc.get("stage_limits", {}).items()}
    return {
        "category": f"{doc['category_code']} {doc['category_name']}",
        "departments": list(doc["departments"]),
        "level": doc["level"],
        # stage -> its limit; "open" -> the deadline of the stage the case waits in (still open cases)
        "deadlines": {**limits,
                      **({"open": f"{timer['stage']} by {iso_local(timer['deadline_ms'])}"} if timer else {})},
        "lights": summary["lights"],
    }


@dataclass
class CaseChange:
    case_id: str
    rule_before: str
    rule_after: str
    changes: dict[str, tuple[Any, Any]]      # field -> (before, after)

    @property
    def rule(self) -> str:
        """The rule key the change is counted under: the new rule (and the old one when it moved)."""
        before, after = _base_rule(self.rule_before), _base_rule(self.rule_after)
        return after if before == after else f"{before} -> {after}"


@dataclass
class KbDiff:
    base_version: str
    new_version: str
    cases_before: int
    cases_after: int
    changed: list[CaseChange] = field(default_factory=list)
    only_before: list[dict[str, Any]] = field(default_factory=list)   # case views, with case_id
    only_after: list[dict[str, Any]] = field(default_factory=list)

    def by_rule(self) -> Counter[str]:
        return Counter(c.rule for c in self.changed)

    def by_field(self) -> Counter[str]:
        return Counter(f for c in self.changed for f in c.changes)

    def to_dict(self, examples: int | None = None) -> dict[str, Any]:
        changed = self.changed if examples is None else self.changed[:examples]
        return {
            "base_version": self.base_version, "new_version": self.new_version,
            "cases_before": self.cases_before, "cases_after": self.cases_after,
            "changed": len(self.changed), "by_rule": dict(self.by_rule().most_common()),
            "by_field": {f: self.by_field()[f] for f in FIELDS if self.by_field()[f]},
            "only_before": [c["case_id"] for c in self.only_before],
            "only_after": [c["case_id"] for c in self.only_after],
            "examples": [{"case_id": c.case_id, "rule_before": c.rule_before, "rule_after": c.rule_after,
                          "changes": {f: {"before": b, "after": a} for f, (b, a) in c.changes.items()}}
                         for c in changed],
        }


def _base_rule(rule_id: str) -> str:
    """'manhole-missing+owner:MH-QJ-0015' -> 'manhole-missing' (the registry owner is data, not a rule)."""
    return rule_id.split("+", 1)[0] if rule_id else "(none)"


def diff_cases(before: Mapping[str, CaseDoc], after: Mapping[str, CaseDoc], base_version: str = "",
               new_version: str = "") -> KbDiff:
    """Compare two replays' case documents (case_id -> document)."""
    diff = KbDiff(base_version, new_version, len(before), len(after))
    for case_id in sorted(before.keys() & after.keys(), key=lambda c: (before[c]["opened_ms"], c)):
        a, b = case_view(before[case_id]), case_view(after[case_id])
        changes = {f: (a[f], b[f]) for f in FIELDS if a[f] != b[f]}
        if changes:
            diff.changed.append(CaseChange(case_id, before[case_id].get("rule_id", ""),
                                           after[case_id].get("rule_id", ""), changes))
    diff.only_before = [{"case_id": c, **case_view(before[c])} for c in sorted(before.keys() - after.keys())]
    diff.only_after = [{"case_id": c, **case_view(after[c])} for c in sorted(after.keys() - before.keys())]
    return diff


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def format_diff(diff: KbDiff, examples: int = 5) -> str:
    """The report as an officer reads it."""
    lines = [f"KB diff {diff.base_version} -> {diff.new_version}: {diff.cases_before} cases before, "
             f"{diff.cases_after} after; {len(diff.changed)} would change, {len(diff.only_before)} only before, "
             f"{len(diff.only_after)} only after"]
    if diff.changed:
        lines.append("by rule:")
        lines += [f"  {n:>5}  {rule}" for rule, n in diff.by_rule().most_common()]
        lines.append("by field:")
        lines += [f"  {diff.by_field()[f]:>5}  {f}" for f in FIELDS if diff.by_field()[f]]
        lines.append(f"examples ({min(examples, len(diff.changed))} of {len(diff.changed)}):")
        for change in diff.changed[:examples]:
            lines.append(f"  {change.case_id}  [{change.rule}]")
            for f, (b, a) in change.changes.items():
                if isinstance(b, dict) and isinstance(a, dict):   # only the keys that differ
                    keys = [k for k in dict.fromkeys([*b, *a]) if b.get(k) != a.get(k)]
                    b, a = {k: b.get(k, "-") for k in keys}, {k: a.get(k, "-") for k in keys}
                lines.append(f"    {f}: {_show(b)}")
                lines.append(f"    {' ' * len(f)}  -> {_show(a)}")
    for label, cases in (("only before", diff.only_before), ("only after", diff.only_after)):
        for view in cases[:examples]:
            lines.append(f"{label}: {view['case_id']}  {view['category']}  {_show(view['departments'])}")
    return "\n".join(lines)


def replay_diff(lines: Iterable[str], settings: Any, base_knowledge: Any, new_knowledge: Any, *,
                until_ms: int | None = None, err: Any = None) -> KbDiff:
    """Replay ``lines`` under both knowledge bases (no store) and compare the cases."""
    from streams.replay import replay

    events = list(lines)
    before = replay(events, settings, None, None, knowledge=base_knowledge, until_ms=until_ms, err=err)
    after = replay(events, settings, None, None, knowledge=new_knowledge, until_ms=until_ms, err=err)
    return diff_cases(before.cases, after.cases, base_knowledge.version, new_knowledge.version)
