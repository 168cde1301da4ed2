"""Dedup across a street boundary through the lean lifecycle's parts (no Kafka): one RocksDB partition state and
lifecycle adapter per case.inputs partition, as LeanLifecycle holds them; the cross inputs the adapters produce
are routed back by their key, as the producer's partitioner does."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.agents.casestate import PartitionCaseState
from streams.agents.lifecycle import LifecycleAdapter, street_partitions
from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import CASE_INPUTS
from streams.core.cases.sla import WorkCalendar
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.metrics import PipelineMetrics
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, PREFIX
from tests.unit.core.cases.test_boundary import boundary_pairs

PARTITIONS = 4


def partition_of(street_code: str) -> int:
    owns = street_partitions(PARTITIONS)
    return next(p for p in range(PARTITIONS) if owns(street_code, p))


async def test_reports_either_side_end_in_one_case(kb: Knowledge, metrics: PipelineMetrics, tmp_path: Path) -> None:
    for p, q in boundary_pairs(kb, 60):
        streets = [kb.locate(*point, None)[0].street_code for point in (p, q)]  # type: ignore[union-attr]
        if partition_of(streets[0]) != partition_of(streets[1]):  # type: ignore[arg-type]
            break
    states = {n: PartitionCaseState(n, tmp_path / str(n), kb, WorkCalendar(), True, closed_ttl_ms=None,
                                    index_lateness_ms=24 * 3_600_000) for n in range(PARTITIONS)}
    adapters = {n: LifecycleAdapter(st.engine, registry(), metrics, NAMES, journals=(st,), rebuild=st.rebuild)
                for n, st in states.items()}
    for adapter in adapters.values():
        adapter.stale = False
    ingestor = Ingestor(kb)

    def field_report(report_id: str, at: tuple[float, float], ts: str) -> dict[str, Any]:
        return {"report_id": report_id, "reporter_id": f"INS-{report_id}", "reporter_kind": "inspector",
                "reported_at": ts, "category": "道路积水", "text": "路面积水很深", "lat": at[0], "lon": at[1]}

    queue: list[tuple[str, Any, dict[str, Any], int]] = []
    for rid, at, ts in (("B1", p, "2026-11-20T09:30:00+08:00"), ("B2", q, "2026-11-20T09:35:00+08:00")):
        [signal] = ingestor.ingest("field_report", registry().from_json("field_report", field_report(rid, at, ts)),
                                   0).signals
        rec = records.signal_input(signal)
        queue.append((CASE_INPUTS, rec.key, rec.value, partition_of(str(rec.key))))
    handled = 0
    while queue and handled < 20:
        topic, key, value, partition = queue.pop(0)
        sink = await run(adapters[partition].handle, TestingSource([(topic, key, value, partition)], prefix=PREFIX),
                         TestingSink(prefix=PREFIX, ledger=True))
        assert [row["outcome"] for row in sink.store_rows("input_ledger")] != ["dlq"]   # one ledger row, no dlq
        assert len(sink.store_rows("input_ledger")) == 1
        states[partition].persist(None, None)
        handled += 1
        queue += [(CASE_INPUTS, r.key, r.value, partition_of(str(r.key))) for r in sink.produced(CASE_INPUTS)]
    docs = [doc for st in states.values() for doc in (st.engine.cases.get(c) for c in st.engine.cases) if doc]
    live = [d for d in docs if d["stage"] != "void"]
    assert len(live) == 1 and sorted(live[0]["sources"]) == ["inspector:B1", "inspector:B2"], docs
    assert [d["duplicate_of"] for d in docs if d["stage"] == "void"] == [live[0]["case_id"]]
    assert not queue and handled >= 5   # two signals, probes, a void_duplicate, an absorb: each one input
