"""One partition's case state in RocksDB (no Kafka): batches persisted, a restart on the same files, a
restore from the changelog records onto new files, incremental gauges, timers and purges on disk, and the
dedup index limited to the cases still within their merge window."""
from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.agents.casestate import LOG_CHECKPOINT, PartitionCaseState, gauge_key
from streams.core.cases.engine import CaseEngine
from streams.core.cases.sla import WorkCalendar
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal
from streams.sources.scenario import ScenarioConfig, scenario_for

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@pytest.fixture(scope="module")
def signals(kb: Knowledge) -> list[Signal]:
    """Three days of a district's reports (every feed of the case path), through the real ingest."""
    from streams.bus.codec import registry
    from streams.bus.topics import RAW_SCHEMAS
    from streams.core.ingest import Ingestor, RejectRecord

    config = ScenarioConfig(hotline_per_day=800, field_per_day=300, camera_per_day=150, registry_per_day=0,
                            tracks_per_day=0, malformed_share=0.0, bursts=())
    start = int(time.time() * 1000) - 4 * DAY_MS
    codec, ingestor = registry(), Ingestor(kb)
    out = []
    for record in scenario_for(kb, 5, config, sources=["hotline", "field", "camera"]).timeline(start, count=3000):
        try:
            schema = RAW_SCHEMAS[record.topic]
            result = ingestor.ingest(schema, codec.decode(record.payload(), schema)[1], record.ts_ms)
        except RejectRecord:
            continue
        out += result.signals
    return out


def state(kb: Knowledge, path: Path, ttl_hours: float = 72, lateness_hours: float = 24) -> PartitionCaseState:
    return PartitionCaseState(0, path, kb, WorkCalendar(), True, closed_ttl_ms=int(ttl_hours * HOUR_MS),
                              index_lateness_ms=int(lateness_hours * HOUR_MS))


def feed(st: PartitionCaseState, signals: list[Signal], log: list[tuple[bytes, bytes | None]], upto: int) -> None:
    """One batch as the lean lifecycle runs it: engine, changelog records, persist."""
    for signal in signals:
        st.engine.on_signal(signal, 0)
    records, _ = st.changelog_records()
    log.extend(records)
    log.append((LOG_CHECKPOINT, st.checkpoint(upto)))
    st.persist(upto, len(log))


def all_docs(st: PartitionCaseState) -> dict[str, dict]:
    return {case_id: st.engine.cases[case_id] for case_id in st.engine.cases}


def counts_by_walking(docs: dict[str, dict]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for doc in docs.values():
        label = gauge_key(doc)
        if label:
            key = tuple(label.split("|"))
            out[key] = out.get(key, 0) + 1  # type: ignore[index]
    return out


def test_batches_survive_a_restart_and_a_restore_from_the_changelog(kb: Knowledge, signals: list[Signal],
                                                                   tmp_path: Path) -> None:
    first = state(kb, tmp_path / "a")
    log: list[tuple[bytes, bytes | None]] = []
    for i in range(0, len(signals), 400):
        feed(first, signals[i:i + 400], log, upto=i + 400)
    docs = all_docs(first)
    assert len(docs) > 500
    # the gauge was kept as cases changed; it equals a walk over every case
    assert first.open_counts() == counts_by_walking(docs)
    first.close()

    # restart on the same files: nothing to read from the changelog, the same cases and counts
    again = state(kb, tmp_path / "a")
    assert again.upto == ((len(signals) - 1) // 400 + 1) * 400  # the last batch's input offset
    assert again.changelog_next == len(log)
    assert all_docs(again) == docs
    assert again.open_counts() == first.open_counts()

    # a new worker: the changelog alone rebuilds the same state (documents stored without decoding)
    fresh = state(kb, tmp_path / "b")
    for key, value in log:
        fresh.apply_changelog(key, value)
    fresh.persist(None, len(log))
    assert all_docs(fresh) == docs
    assert fresh.open_counts() == again.open_counts()
    assert fresh.engine.timers_pending() == again.engine.timers_pending()
    assert fresh.upto == again.upto and fresh.engine.watermark_ms == again.engine.watermark_ms

    # both index the same live cases, and a later report merges the same way in either
    again.rebuild()
    fresh.rebuild()
    assert set(again.engine.live) == set(fresh.engine.live)
    late = signals[-1]
    repeat = Signal.from_dict({**late.to_dict(), "signal_id": "sig-repeat", "source_id": "repeat-1"})
    assert again.engine.on_signal(repeat, 0).merged == fresh.engine.on_signal(repeat, 0).merged == 1


def test_the_index_holds_only_cases_a_report_can_still_join(kb: Knowledge, signals: list[Signal],
                                                            tmp_path: Path) -> None:
    st = state(kb, tmp_path / "c", lateness_hours=0)
    log: list[tuple[bytes, bytes | None]] = []
    feed(st, signals, log, upto=len(signals))
    engine = st.engine
    assert engine.evict() > 0  # the clock tick's job in the worker
    open_cases = [d for d in all_docs(st).values() if d["open"]]
    assert len(engine.live) < len(open_cases)  # older cases left the index as the days went by
    for case_id in engine.live:
        assert engine.window_end(st.engine.cases[case_id]) >= engine.watermark_ms  # type: ignore[operator]
    st.close()
    # a restart loads exactly those (from the window keys), not every case
    again = state(kb, tmp_path / "c", lateness_hours=0)
    loaded = list(again.live_documents())
    assert {d["case_id"] for d in loaded} == set(engine.live)
    again.rebuild()
    assert set(again.engine.live) == set(engine.live)


def test_closed_cases_leave_by_their_purge_timer(kb: Knowledge, signals: list[Signal], tmp_path: Path) -> None:
    st = state(kb, tmp_path / "d", ttl_hours=1)
    log: list[tuple[bytes, bytes | None]] = []
    feed(st, signals[:200], log, upto=200)
    # a case the centre verifies and closes (a station's or committee's own report is closed by its originator)
    victim = next(d for d in all_docs(st).values() if d["open"] and d["stage"] == "handle"
                  and d.get("origin") not in ("station", "committee"))
    ts = victim["updated_ms"] + 60_000
    for i, (action, kind, actor) in enumerate((("handled", "department", victim["departments"][0]),
                                               ("verify_pass", "center", "区网格中心"),
                                               ("close", "center", "区网格中心"))):
        out = st.engine.on_action({"action_id": f"A{i}", "case_id": victim["case_id"], "action": action,
                                   "actor_kind": kind, "actor_id": actor,
                                   "ts": time.strftime("%Y-%m-%dT%H:%M:%S+08:00",
                                                       time.gmtime((ts + i) / 1000 + 8 * 3600))}, 0)
        assert not out.rejections, out.rejections
    st.persist(None, None)
    assert st.engine.cases[victim["case_id"]]["stage"] == "closed"
    sources = [s.split(":", 1)[1] for s in victim["sources"]]
    assert all(st.engine.sources.get(s) == victim["case_id"] for s in sources)
    st.engine.on_tick(ts + 30 * 60_000, 0)        # not yet
    assert victim["case_id"] in st.engine.cases
    st.engine.on_tick(ts + 2 * HOUR_MS, 0)        # an hour after closing: gone, with its sources
    records, changed_sources = st.changelog_records()
    st.persist(None, None)
    assert victim["case_id"] not in st.engine.cases
    assert all(st.engine.sources.get(s) is None for s in sources)
    assert (b"c:" + victim["case_id"].encode(), None) in records  # a tombstone for the compacted changelog
    assert all(changed_sources[s] is None for s in sources)


def test_a_million_cases_cost_no_memory_walk(kb: Knowledge) -> None:
    """The gauge and the timers are read without touching every document (they are counts and sorted keys)."""
    engine = CaseEngine(kb, {}, {})
    assert engine.timers_pending() == 0
    doc = {"case_id": "x", "open": True, "stage": "handle", "timer": None, "lights": {}, "updated_ms": 0,
           "origin": "12345", "category_name": "暴露垃圾", "last_signal_ms": 0, "opened_ms": 0}
    assert gauge_key(doc) == "handle|green"  # type: ignore[arg-type]
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_an_input_undone_leaves_no_trace_in_the_batch(kb: Knowledge, signals: list[Signal], tmp_path: Path) -> None:
    """The lifecycle adapter's journal (mark/undo): an input that fails half-way takes back its document,
    source, window and timer keys and gauge counts, and the rest of the batch stays as it was."""
    st = state(kb, tmp_path / "p0")
    log: list[tuple[bytes, bytes | None]] = []
    feed(st, signals[:100], log, 100)
    for signal in signals[100:120]:
        st.mark()
        st.engine.on_signal(signal, 0)
    kept = (dict(st.dirty_docs), dict(st.dirty_sources), dict(st.puts), set(st.deletes), dict(st.counts),
            st.engine.watermark_ms)
    st.mark()
    outputs = st.engine.on_signal(signals[120], 0)
    assert outputs.cases and st.dirty_docs != kept[0]
    assert st.undo() is True
    assert (dict(st.dirty_docs), dict(st.dirty_sources), dict(st.puts), set(st.deletes), dict(st.counts),
            st.engine.watermark_ms) == kept
    st.rebuild()   # the index again from the disk's and the batch's window keys
    assert signals[120].source_id not in st.engine.sources
    st.mark()
    assert st.undo() is False   # nothing written since the mark
    # the batch goes on: the same input again opens or joins the same case as without the undone try
    again = st.engine.on_signal(signals[120], 0)
    assert [c["case_id"] for c in again.cases] == [c["case_id"] for c in outputs.cases]
