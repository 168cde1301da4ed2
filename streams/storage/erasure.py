"""Erasure of one caller's personal data from ClickHouse (``streams erase``; docs/security.md).

A caller is known to the store only by their pseudonyms (one per pseudonym key, current and previous)
and, inside sealed dead-letter originals, by their number. What goes:

* ``signals``: the caller's reports (reporter_id) are deleted;
* ``triage``: the raw records awaiting triage that carry the caller's pseudonym are deleted;
* ``case_transitions``: the caller as the actor of a discovery or merge becomes ``erased``;
* ``dead_letters``: rows whose opened original holds the caller's number are deleted (needs the
  dead-letter key to look inside).

Cases, dispatches and SLA alerts hold no caller data and stay. Deletes and updates are ClickHouse
mutations; this module waits until they are applied, so its report is what the store now holds.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams.storage.retention import wait_for_mutations
from streams.storage.sql import sql_literal
from streams.storage.store import Store

ERASED = "erased"


@dataclass
class ErasureReport:
    rows: dict[str, int] = field(default_factory=dict)   # table -> rows deleted or rewritten
    dead_letters_unreadable: int = 0                      # sealed rows no configured key opens

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _digits(data: bytes) -> str:
    return re.sub(rb"\D", b"", data).decode("ascii")


def erase_caller(store: Store, pseudonyms: Sequence[str], number_digits: str,
                 open_original: Callable[[str], bytes | None] | None, dry_run: bool = False) -> ErasureReport:
    """Remove the caller's rows; ``open_original(text)`` opens a sealed dead-letter original (None when no
    key opens it). With ``dry_run`` only counts."""
    report = ErasureReport()
    known = set(store.tables())
    names = ", ".join(sql_literal(p) for p in pseudonyms)
    plan: list[tuple[str, str, str]] = []   # (table, WHERE, mutation)
    if "signals" in known:
        plan.append(("signals", f"reporter_id IN ({names})", "DELETE"))
    if "triage" in known:
        plan.append(("triage", " OR ".join(f"position(record, {sql_literal(p)}) > 0" for p in pseudonyms), "DELETE"))
    if "case_transitions" in known:
        plan.append(("case_transitions", f"actor_id IN ({names})", f"UPDATE actor_id = {sql_literal(ERASED)}"))
    for table, where, mutation in plan:
        count = int(store.query(f"SELECT count() AS n FROM {table} WHERE {where}")[0]["n"])
        report.rows[table] = count
        if count and not dry_run:
            store.execute(f"ALTER TABLE {table} {mutation} WHERE {where}")
            wait_for_mutations(store, table)
    if "dead_letters" in known and number_digits:
        hits: list[str] = []
        for row in store.query("SELECT topic, partition, offset, original FROM dead_letters"):
            original = row["original"]
            opened = open_original(original) if open_original is not None else None
            if opened is None:
                if original.startswith("gAAAAA"):
                    report.dead_letters_unreadable += 1
                    continue
                opened = original.encode("utf-8")   # written before sealing: in clear
            if number_digits in _digits(opened):
                hits.append(f"(topic = {sql_literal(row['topic'])} AND partition = {int(row['partition'])} "
                            f"AND offset = {int(row['offset'])})")
        hits = sorted(set(hits))
        report.rows["dead_letters"] = len(hits)
        if hits and not dry_run:
            store.execute(f"ALTER TABLE dead_letters DELETE WHERE {' OR '.join(hits)}")
            wait_for_mutations(store, "dead_letters")
    return report
