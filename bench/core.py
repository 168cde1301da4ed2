"""The domain core alone, offline: CPU time per event of decode, ingest and the case engine.

The same city-scenario records as ``bench/run.py`` (hotline calls, field reports, camera alerts, registry
changes), without Kafka, RocksDB or ClickHouse: the codec decodes each record, the ``Ingestor`` validates,
locates and classifies them in batches of 500 (as the worker does), and an in-memory ``CaseEngine`` dedups,
opens, merges and dispatches. This is the ceiling the worker cannot beat: the plumbing only adds to it.

    python bench/core.py [--events 20000] [--seed 7] [--profile engine|ingest] [--json PATH]

``--profile``: cProfile of that step, the top entries by cumulative time on stderr.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import past_backlog  # noqa: E402

BATCH = 500


def run(events: int, seed: int, profile: str | None = None) -> dict[str, Any]:
    from streams.bus.codec import DecodeError, registry
    from streams.bus.topics import RAW_SCHEMAS
    from streams.core.cases.engine import CaseEngine
    from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
    from streams.core.ingest import Ingestor, RejectRecord
    from streams.core.knowledge.knowledge import Knowledge

    records = past_backlog(events, seed)
    knowledge = Knowledge.load()
    codec, ingestor = registry(), Ingestor(knowledge)
    engine = CaseEngine(knowledge, {}, {}, WorkCalendar(DEFAULT_OVERRIDE_FILE), auto_dispatch=True)
    payloads = [(RAW_SCHEMAS[r.topic], r.payload(), r.ts_ms) for r in records]
    if os.environ.get("BENCH_GC", "worker") == "worker":
        from streams.agents.worker import tune_gc

        tune_gc()  # as the worker does once it is set up
    ref_ms = int(time.time() * 1000)

    profiler = cProfile.Profile()
    cpu: dict[str, float] = {"decode": 0.0, "ingest": 0.0, "engine": 0.0}
    signals = cases_rows = 0
    for start in range(0, len(payloads), BATCH):
        chunk = payloads[start:start + BATCH]
        t = time.process_time()
        decoded = []
        for feed, payload, ts_ms in chunk:
            try:
                decoded.append((feed, codec.decode(payload, feed, ref_ms=ref_ms)[1], ts_ms))
            except DecodeError:
                pass
        cpu["decode"] += time.process_time() - t

        if profile == "ingest":
            profiler.enable()
        t = time.process_time()
        ingestor.prepare([raw for _, raw, _ in decoded])
        results = []
        for feed, raw, ts_ms in decoded:
            try:
                results.append(ingestor.ingest(feed, raw, ts_ms))
            except RejectRecord:
                pass
        cpu["ingest"] += time.process_time() - t
        profiler.disable()

        if profile == "engine":
            profiler.enable()
        t = time.process_time()
        for result in results:
            for signal in result.signals:
                out = engine.on_signal(signal)
                signals += 1
                cases_rows += len(out.case_rows) if hasattr(out, "case_rows") else 0
        cpu["engine"] += time.process_time() - t
        profiler.disable()

    n = len(records)
    per_event = {step: round(seconds / n * 1e6, 1) for step, seconds in cpu.items()}
    result = {"events": n, "signals": signals, "open_cases": len(engine.cases),
              "cpu_us_per_event": per_event, "core_us_per_event": round(sum(per_event.values()), 1),
              "events_per_cpu_second": round(n / max(sum(cpu.values()), 1e-9))}
    if profile:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", choices=["engine", "ingest"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.events, args.seed, args.profile)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
