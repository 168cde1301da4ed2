"""Cases in ClickHouse as the worker would leave them: the real Ingestor and CaseEngine over raw records,
their rows inserted the way the ClickHouse sink inserts them (without Kafka, to test the read side alone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.bus.codec import registry
from streams.bus.records import SIGNAL_COLUMNS, clean_row
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.storage import Store

INGEST_MS = 1_795_000_000_000


@dataclass
class City:
    knowledge: Knowledge
    store: Store
    engine: CaseEngine = field(init=False)
    ingestor: Ingestor = field(init=False)

    def __post_init__(self) -> None:
        self.engine = CaseEngine(self.knowledge, {}, {}, auto_dispatch=True)
        self.ingestor = Ingestor(self.knowledge)

    def _write(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        for table, rows in tables.items():
            if rows:
                self.store.insert(table, [clean_row(r) for r in rows])

    def raw(self, feed: str, record: dict[str, Any]) -> list[str]:
        """One raw record through ingest and the engine; returns the ids of the cases it touched."""
        valid = registry().from_json(feed, record)
        result = self.ingestor.ingest(feed, valid, INGEST_MS)
        tables: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in result.rows.items()}
        tables["triage"] = [dict(t.__dict__) for t in result.triage]
        tables["signals"] = [{k: s.to_dict().get(k) for k in SIGNAL_COLUMNS} for s in result.signals]
        touched = []
        for signal in result.signals:
            out = self.engine.on_signal(signal)
            for name, rows in out.tables().items():
                tables.setdefault(name, []).extend(rows)
            touched += [r["case_id"] for r in out.cases]
        self._write(tables)
        return touched

    def act(self, action: dict[str, Any]) -> dict[str, Any]:
        out = self.engine.on_action(registry().from_json("case_action", action))
        self._write(out.tables())
        return {"rejections": out.rejections, "cases": out.cases}

    def tick(self, now_ms: int) -> None:
        self._write(self.engine.on_tick(now_ms).tables())
