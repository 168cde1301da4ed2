"""Property-based fuzzing of every adapter's failure boundary through the in-memory testing bus: any mix
of good records, poison records of every class, arbitrary bytes, schema-shaped junk and tombstones goes
in; the adapter never raises, every input gets exactly one ledger row, and each input it refuses is
exactly one dead letter carrying its original bytes (docs/reliability.md)."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.actions import ActionRouter
from streams.agents.ingest import IngestAdapter
from streams.agents.lean import LeanIngest
from streams.agents.lifecycle import LifecycleAdapter
from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import (
    CAMERA_ALERTS,
    CASE_ACTIONS,
    CASE_INPUTS,
    FIELD_REPORTS,
    FIELD_TRACKS,
    HOTLINE_CALLS,
    IOT_READINGS,
    REGISTRY_CHANGES,
    dlq,
)
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.settings import Settings
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, NOW_MS, PREFIX, call, clock, fresh_metrics, reading, track

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
NOW_ISO = "2026-11-20T11:20:00+08:00"  # a few minutes before the fixed clock (NOW_MS)

GOOD: dict[str, list[dict[str, Any]]] = {
    HOTLINE_CALLS: [call(), call("C-2", "斜土路楼下饭店油烟直排", "斜土路1200号", received_at=NOW_ISO)],
    FIELD_REPORTS: [{"report_id": "R1", "reporter_id": "insp-007", "reporter_kind": "inspector",
                     "reported_at": NOW_ISO, "category": "私装地锁", "address": "斜土路1175弄"}],
    CAMERA_ALERTS: [{"alert_id": "A1", "camera_id": "CAM-XH-004", "ts": NOW_ISO, "type": "street_vending",
                     "confidence": 0.9}],
    REGISTRY_CHANGES: [{"change_id": "G1", "ts": NOW_ISO, "address": "淮海中路1850号", "kind": "housing_contract"}],
    IOT_READINGS: [reading("HB-WK-V01", "vibration_mm_s", 3.1), reading("HB-WK-V01", "vibration_mm_s", 1.0),
                   reading("LIFT-YGY-03-1", "ebike_detected", 1)],
    FIELD_TRACKS: [track()],
    CASE_ACTIONS: [{"action_id": "X1", "ts": NOW_ISO, "source_id": "C-QZ-1", "actor_kind": "department",
                    "actor_id": "房管办", "action": "handled"}],
}
POISON = [
    None,                                                        # tombstone
    b"", b"\x00\xffnot a record", b"[1, 2]", b"{", b"NaN",
    b'{"text": ' + b"[" * 3000 + b"]" * 3000 + b"}",            # deep nesting
    json.dumps({**call(), "text": "a\ud800b"}).encode("ascii"),    # lone surrogate
    json.dumps({**call(), "address": "x" * 20_000}).encode(),     # too long
    json.dumps({**call(), "received_at": "1970-01-01T00:00:00Z"}).encode(),
    json.dumps({**call(), "line": "99999"}).encode(),
    b"\xc3\x01" + b"\x99" * 8 + b"\x00",                        # unknown fingerprint
]


def junk() -> st.SearchStrategy[bytes | None]:
    """Arbitrary bytes, arbitrary JSON objects, NaN-laden or out-of-range field values."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    objects = st.dictionaries(st.sampled_from(["call_id", "line", "received_at", "text", "lat", "lon", "value",
                                               "ts", "device_id", "metric", "kind", "x"]), scalars, max_size=8)
    return (st.binary(max_size=80)
            | objects.map(lambda o: json.dumps(o, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))
            | st.sampled_from(POISON))


def inputs(topics: list[str]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    good = st.sampled_from([(t, r) for t in topics for r in GOOD.get(t, [])])
    bad = st.tuples(st.sampled_from(topics), junk())
    return st.lists(good | bad, min_size=1, max_size=10)


def ledger(sink: TestingSink) -> list[dict[str, Any]]:
    return sink.store_rows("input_ledger")


def check_boundary(sink: TestingSink, fed: list[tuple[str, Any]], dlq_topic: Any = None) -> None:
    """One ledger row per input (distinct positions); a dead letter per 'dlq' outcome, with the bytes."""
    rows = ledger(sink)
    assert len(rows) == len(fed) == len({(r["topic"], r["partition"], r["offset"]) for r in rows})
    parked = [r for r in rows if r["outcome"] == "dlq"]
    dead = [d for topic in {t for t, _ in fed} for d in sink.values(dlq(dlq_topic or topic))]
    assert len(dead) == len(parked)
    by_position = {(r["topic"], r["offset"]): r for r in rows}
    for d in dead:
        assert (d["topic"], d["offset"]) in by_position and d["reason"]
    if any(value is None for _, value in fed):  # a tombstone is always refused, and says so
        assert any("null" in d["reason"] for d in dead)


def source_items(fed: list[tuple[str, Any]]) -> list[tuple[str, Any, Any]]:
    return [(topic, f"k{i}", value) for i, (topic, value) in enumerate(fed)]


@pytest.mark.parametrize("classify_batches", [True, False])
@FUZZ
@given(fed=inputs([HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES]))
async def test_ingest(kb: Knowledge, classify_batches: bool, fed: list[tuple[str, Any]]) -> None:
    adapter = IngestAdapter(Ingestor(kb), registry(), fresh_metrics(), NAMES, clock=clock,
                            classify_batches=classify_batches)
    sink = await run(adapter.handle, TestingSource(source_items(fed), prefix=PREFIX, encoding="json",
                                                   timestamp_ms=NOW_MS), TestingSink(prefix=PREFIX, ledger=True))
    check_boundary(sink, fed)
    for signal in sink.values(CASE_INPUTS):
        doc = json.loads(signal["signal"])
        assert all(math.isfinite(v) for v in (doc["confidence"], doc["lat"] or 0, doc["lon"] or 0))


@FUZZ
@given(fed=inputs([CASE_ACTIONS]))
async def test_actions_router(fed: list[tuple[str, Any]]) -> None:
    async def nobody(source_id: str) -> str | None:
        return None

    router = ActionRouter(registry(), fresh_metrics(), NAMES, nobody, clock=clock)
    sink = await run(router.handle, TestingSource(source_items(fed), prefix=PREFIX, encoding="json",
                                                  timestamp_ms=NOW_MS), TestingSink(prefix=PREFIX, ledger=True))
    check_boundary(sink, fed)


@FUZZ
@given(fed=inputs([IOT_READINGS, FIELD_TRACKS]))
async def test_lean_consumer(kb: Knowledge, fed: list[tuple[str, Any]]) -> None:
    metrics = fresh_metrics()
    adapter = IngestAdapter(Ingestor(kb), registry(), metrics, NAMES, clock=clock, classify_batches=False)
    service = LeanIngest(Settings(topic_prefix=PREFIX, app_id="fuzz", kafka_bootstrap="127.0.0.1:1"), adapter,
                         registry(), metrics)
    sink = TestingSink(prefix=PREFIX, ledger=True)
    service.sealer = sink.sealer
    await run(service.process, TestingSource(source_items(fed), prefix=PREFIX, encoding="json", timestamp_ms=NOW_MS),
              sink, consumer_records=True)
    check_boundary(sink, fed)


@FUZZ
@given(junk_inputs=st.lists(junk(), max_size=6), ticks=st.integers(0, 3))
async def test_lifecycle(kb: Knowledge, junk_inputs: list[bytes | None], ticks: int) -> None:
    ingestor = Ingestor(kb)
    signals = [s for r in GOOD[HOTLINE_CALLS] for s in
               ingestor.ingest("hotline_call", registry().from_json("hotline_call", r), NOW_MS).signals]
    codec = registry()
    fed: list[tuple[str, Any]] = [(CASE_INPUTS, codec.encode("case_input", records.signal_input(s).value))
                                  for s in signals]
    fed += [(CASE_INPUTS, codec.encode("case_input", records.tick_input(NOW_MS + 86_400_000 * i).value))
            for i in range(ticks)]
    fed += [(CASE_INPUTS, value) for value in junk_inputs]
    cases: dict[str, Any] = {}
    adapter = LifecycleAdapter(CaseEngine(kb, cases, {}, auto_dispatch=True), codec, fresh_metrics(), NAMES,
                               clock=clock)
    sink = await run(adapter.handle, TestingSource(source_items(fed), prefix=PREFIX, timestamp_ms=NOW_MS),
                     TestingSink(prefix=PREFIX, ledger=True))
    check_boundary(sink, fed)
    assert len(cases) >= 1   # the good signals opened their cases whatever junk came along


@FUZZ
@given(fed=st.lists(st.tuples(st.sampled_from(["dispatches", "cases", "case.events", "sla.alerts", "triage.manual",
                                                "store.rows", dlq(HOTLINE_CALLS)]), junk()), min_size=1, max_size=8))
async def test_clickhouse_sink(fed: list[tuple[str, Any]]) -> None:
    from streams.sinks.clickhouse import ClickHouseSink
    from tests.unit.sinks.test_clickhouse import RecordingStore

    sink = ClickHouseSink(Settings(topic_prefix=PREFIX, kafka_bootstrap="127.0.0.1:1"), RecordingStore(), registry(),
                          fresh_metrics())
    recs = TestingSource(source_items(fed), prefix=PREFIX).consumer_records()
    prepared = await sink.prepare(recs)
    await sink.deliver(prepared)   # never raises for a record's fault
    written = {table: rows for table, rows in sink.store.inserts}
    assert len(written.get("sink_dead_letters", [])) == len(fed)  # none of the junk is a readable record
