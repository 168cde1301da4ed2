"""The ClickHouse sink's write of one batch: every row the server accepts is written, every row it
refuses is set aside with the reason, and an unreachable server is told apart from a refused row.

A failed INSERT can mean two things. Either ClickHouse is down (or unreachable), and nothing is the
rows' fault: the caller pauses and retries the whole batch later. Or the server is up and refused
something in the batch (a value its column cannot take): then the batch is bisected, halves that
insert are written, and the single rows that still fail are returned as refused, with the server's
reason, for the ``sink_dead_letters`` table. A probe (``SELECT 1``) after the failure decides which
of the two it was. Re-inserting a half that a failed INSERT had partly written adds no duplicate:
every table is a ReplacingMergeTree on an idempotent key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from streams.storage.sql import RowError
from streams.storage.store import Store

DEAD_LETTER_TABLE = "sink_dead_letters"
MAX_REASON = 2000
MAX_ROW_TEXT = 100_000


class StoreUnavailable(RuntimeError):
    """ClickHouse did not answer; retry later (not the rows' fault)."""


class SinkRow(NamedTuple):   # one per row the sink writes: a NamedTuple is several times cheaper to build
    """A table row and the Kafka record it came from (``row_index``: its place in a store.rows record)."""

    topic: str
    partition: int
    offset: int
    row_index: int
    row: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    row: SinkRow
    table: str
    reason: str

    def dead_letter(self, ts_ms: int) -> dict[str, Any]:
        """The ``sink_dead_letters`` row for it."""
        try:
            text = json.dumps(self.row.row, ensure_ascii=False, default=repr)
        except ValueError:  # NaN and the like: repr is readable enough for an operator
            text = repr(self.row.row)
        return {"topic": self.row.topic, "partition": self.row.partition, "offset": self.row.offset,
                "row_index": self.row.row_index, "target_table": self.table, "reason": _safe(self.reason, MAX_REASON),
                "ts_ms": ts_ms, "row": _safe(text, MAX_ROW_TEXT)}


def _safe(text: str, limit: int) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def reachable(store: Store) -> bool:
    try:
        store.query("SELECT 1 AS one")
        return True
    except Exception:
        return False


def write_table(store: Store, table: str, rows: list[SinkRow]) -> list[Refused]:
    """Write what can be written; return the refused rows. Raises StoreUnavailable."""
    refused: list[Refused] = []
    items: list[tuple[SinkRow, list[Any]]] = []
    for item in rows:
        try:
            items.append((item, store.normalize(table, item.row)))
        except RowError as exc:
            refused.append(Refused(item, table, f"does not fit table {table}: {exc}"))
        except Exception as exc:  # reading the table's columns needs the server
            if reachable(store):
                refused.append(Refused(item, table, f"cannot be written to {table}: {exc}"))
            else:
                raise StoreUnavailable(f"ClickHouse unreachable: {exc}") from exc
    _insert_bisecting(store, table, items, refused)
    return refused


def _insert_bisecting(store: Store, table: str, items: list[tuple[SinkRow, list[Any]]],
                      refused: list[Refused]) -> None:
    if not items:
        return
    try:
        store.insert_normalized(table, [values for _, values in items])
        return
    except Exception as exc:
        if not reachable(store):
            raise StoreUnavailable(f"ClickHouse unreachable: {str(exc).splitlines()[0]}") from exc
        if len(items) == 1:
            reason = "; ".join(line for line in str(exc).splitlines()[:3] if line.strip())
            refused.append(Refused(items[0][0], table, f"refused by ClickHouse: {reason}"))
            return
    middle = len(items) // 2
    _insert_bisecting(store, table, items[:middle], refused)
    _insert_bisecting(store, table, items[middle:], refused)


def write_refused(store: Store, refused: list[Refused], ts_ms: int) -> None:
    """The refused rows into ``sink_dead_letters``; raises StoreUnavailable (a dead letter is never dropped)."""
    if not refused:
        return
    try:
        store.insert(DEAD_LETTER_TABLE, [r.dead_letter(ts_ms) for r in refused])
    except Exception as exc:
        raise StoreUnavailable(f"cannot write {len(refused)} sink dead letters: {exc}") from exc
