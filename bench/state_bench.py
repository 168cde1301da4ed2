"""Restart and memory with a million open cases (the lean lifecycle's RocksDB case state).

    .venv/bin/python -m bench.state_bench [--cases 1000000] [--json FILE]

1. Case documents made by the real engine from the city scenario (a few thousand distinct ones) are copied
   under new ids and opening times spread over the last 60 days (their lights already fired), until there
   are ``--cases`` open cases; they, their sources and a checkpoint per partition go on the ``case.state``
   changelog (and ``case.sources``) of a fresh broker, as the lifecycle itself writes them.
2. **New worker** (no local files, as after a rebalance onto a new machine): a worker starts, restores its
   partitions from the changelog into RocksDB and indexes the cases still within their merge window; time
   from start until a probe call sent at start is on a case.
3. **Restart** (the same files): the worker is stopped (SIGTERM, it leaves the group) and started again;
   time until the next probe is on a case. Then once more after SIGKILL (Kafka first waits out the dead
   member's session timeout, ``--session-timeout``).
4. Peak RSS of each worker (VmHWM), the time until the open-cases gauge holds every case (all partitions
   restored, not only the probe's), and the restore time the lifecycle logs for each partition.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.meta import load, run_metadata  # noqa: E402
from bench.run import RESULTS, SINGLE_BROKER, Run, metric, scrape  # noqa: E402
from streams.local.kafka import LocalKafka  # noqa: E402

DAY_MS = 86_400_000


def templates(seed: int) -> list[dict[str, Any]]:
    """Open case documents from the real engine over a scenario day (all partitions' worth)."""
    from streams.bus.codec import registry
    from streams.bus.topics import RAW_SCHEMAS
    from streams.core.cases.engine import CaseEngine
    from streams.core.ingest import Ingestor, RejectRecord
    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources.scenario import scenario_for

    kb = Knowledge.load()
    codec, ingestor = registry(), Ingestor(kb)
    cases: dict[str, Any] = {}
    engine = CaseEngine(kb, cases, {}, auto_dispatch=True)
    start = int(time.time() * 1000) - 30 * DAY_MS
    for record in scenario_for(kb, seed, sources=["hotline", "field", "camera"]).timeline(start, count=12000):
        if record.topic == "field.tracks" or record.malformed:
            continue
        try:
            raw = codec.decode(record.payload(), RAW_SCHEMAS[record.topic])[1]
            result = ingestor.ingest(RAW_SCHEMAS[record.topic], raw, record.ts_ms)
        except RejectRecord:
            continue
        for sig in result.signals:
            engine.on_signal(sig, 0)
    return [doc for doc in cases.values() if doc["open"]]


def _shift(value: Any, delta: int, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, delta, k if not key == "stages" else "stages") for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and (key.endswith("_ms") or key == "stages") and value:
        return value + delta
    return value


def synthetic_cases(n: int, partitions: int, seed: int) -> Any:
    """Yields (partition, case document) for n open cases copied from the templates."""
    from kafka.partitioner.default import murmur2

    base = templates(seed)
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    for i in range(n):
        doc = _shift(base[i % len(base)], 0)
        opened = now - rng.randrange(60 * DAY_MS)
        doc = _shift(doc, opened - doc["opened_ms"])
        street = doc.get("street_code") or "unlocated"
        day = time.strftime("%Y%m%d", time.gmtime(opened / 1000 + 8 * 3600))
        doc["case_id"] = f"{street}-{day}-{i:08x}"
        partition = (murmur2(street.encode()) & 0x7FFFFFFF) % partitions
        doc["partition"] = partition
        doc["sources"] = [f"{s.split(':', 1)[0]}:{s.split(':', 1)[1]}-{i}" for s in doc["sources"]]
        timer = doc.get("timer")
        if timer is not None:  # as if the lights of an old case had fired on time
            timer["yellow_fired"] = timer["yellow_fired"] or timer["yellow_ms"] < now
            timer["red_fired"] = timer["red_fired"] or timer["deadline_ms"] < now
        yield partition, doc


async def load_changelog(bootstrap: str, prefix: str, n: int, partitions: int, seed: int) -> float:
    """The cases on case.state and case.sources, as the lifecycle writes them. Returns seconds taken."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from streams.agents.casestate import LOG_CHECKPOINT, LOG_DOC, LOG_SOURCE, changelog_value
    from streams.bus.topics import CASE_SOURCES, CASE_STATE, TopicNames
    from streams.core.cases.engine import CaseEngine
    from streams.core.knowledge.knowledge import Knowledge

    names = TopicNames(prefix)
    engine = CaseEngine(Knowledge.load(), {}, {}, closed_ttl_ms=72 * 3_600_000, index_lateness_ms=24 * 3_600_000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024,
                                compression_type="gzip", max_request_size=8 * 1024 * 1024)
    await producer.start()
    started = time.monotonic()
    pending = []
    try:
        for i, (partition, doc) in enumerate(synthetic_cases(n, partitions, seed)):
            pending.append(await producer.send(names.name(CASE_STATE), changelog_value(engine, doc),
                                               key=LOG_DOC + doc["case_id"].encode(), partition=partition))
            for source in doc["sources"]:
                source_id = source.split(":", 1)[1]
                pending.append(await producer.send(names.name(CASE_STATE), doc["case_id"].encode(),
                                                   key=LOG_SOURCE + source_id.encode(), partition=partition))
                pending.append(await producer.send(names.name(CASE_SOURCES), doc["case_id"].encode(),
                                                   key=source_id.encode()))
            if len(pending) > 20000:
                await asyncio.gather(*pending)
                pending = []
            if i and i % 100_000 == 0:
                print(f"  {i:,} cases on the changelog", file=sys.stderr)
        for partition in range(partitions):
            pending.append(await producer.send(names.name(CASE_STATE), orjson.dumps(
                {"upto": 0, "watermark_ms": int(time.time() * 1000)}), key=LOG_CHECKPOINT, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def probe(bootstrap: str, prefix: str, tag: str) -> None:
    from bench.run import produce
    from streams.sources.scenario import SimRecord

    record = SimRecord(int(time.time() * 1000), 0, "hotline.calls", {
        "call_id": f"PROBE-{tag}", "line": "12345", "received_at": time.strftime("%Y-%m-%dT%H:%M:%S+08:00",
                                                                                  time.gmtime(time.time() + 8 * 3600)),
        "caller": "13900000000", "text": "斜土路1221号楼下饭店油烟直排，家里窗户都不敢开", "address": "斜土路1221号"})
    produce(bootstrap, prefix, [record])


def until_on_a_case(run: Run, worker: Any, since: float, timeout: float = 600) -> tuple[float, float]:
    """(seconds from ``since`` until the probe is on a case, peak RSS MB meanwhile)."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise SystemExit(f"state bench: the worker exited; see {worker.log}")
        peak = max(peak, peak_rss_mb(worker.proc.pid))
        text = scrape(worker.metrics_url)
        if metric(text, "citygrid_cases_opened_total") + metric(text, "citygrid_dedup_merges_total") >= 1:
            return time.monotonic() - since, max(peak, peak_rss_mb(worker.proc.pid))
        time.sleep(0.2)
    raise SystemExit(f"state bench: the probe was not on a case after {timeout}s; see {worker.log}")


def open_cases(worker: Any) -> float:
    return metric(scrape(worker.metrics_url), "citygrid_open_cases")


def until_all_open(worker: Any, cases: int, since: float, timeout: float = 600) -> tuple[float | None, float]:
    """(seconds from ``since`` until the open-cases gauge holds every case, peak RSS MB meanwhile): every
    partition restored, not only the probe's. None when the gauge does not get there within ``timeout``."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    while time.monotonic() < deadline and worker.proc.poll() is None:
        peak = max(peak, peak_rss_mb(worker.proc.pid))
        if open_cases(worker) >= cases:
            return time.monotonic() - since, max(peak, peak_rss_mb(worker.proc.pid))
        time.sleep(0.5)
    return None, peak


def restore_seconds(log: Path) -> list[float]:
    import re

    return [float(m) for m in re.findall(r"partition \d+ ready in ([0-9.]+) s", log.read_text(errors="replace"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS / "state.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"bench": "state", **run_metadata(), "cases": args.cases,
                               "partitions": args.partitions,
                               "goals": {"seconds_to_processing_max": 30, "peak_rss_mb_max": 1536}}
    with tempfile.TemporaryDirectory(prefix="citygrid-state-") as tmp:
        work = Path(tmp)
        broker = LocalKafka(work / "kafka").start()
        try:
            run = Run(broker.bootstrap, work)
            from streams.agents.worker import ensure_topics
            from streams.settings import Settings

            ensure_topics(Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=run.prefix,
                                   topic_partitions=args.partitions, **SINGLE_BROKER))
            loaded = asyncio.run(load_changelog(broker.bootstrap, run.prefix, args.cases, args.partitions, args.seed))
            results["changelog_load_seconds"] = round(loaded, 1)
            print(f"loaded     {args.cases:,} open cases onto the changelog in {loaded:.0f} s")
            settings = {"kafka_session_timeout_seconds": str(args.session_timeout), "log_level": "info",
                        "topic_partitions": str(args.partitions), "data_dir": str(work / "state")}
            store = f"chdb://{work / 'chdb'}"
            for label, stop in (("new_worker", None), ("restart", signal.SIGTERM), ("restart_after_kill",
                                                                                    signal.SIGKILL)):
                if stop is not None:
                    run.workers[-1].stop(stop)
                started = time.monotonic()
                worker = run.start_worker(store, **settings)
                probe(broker.bootstrap, run.prefix, label)
                seconds, rss = until_on_a_case(run, worker, started)
                full, full_rss = until_all_open(worker, args.cases, started)
                rss = max(rss, full_rss)
                results[label] = {"seconds_to_processing": round(seconds, 1),
                                  "seconds_to_all_cases_open": None if full is None else round(full, 1),
                                  "peak_rss_mb": round(rss),
                                  "open_cases_gauge": open_cases(worker),
                                  "restore_seconds_by_partition": restore_seconds(worker.log),
                                  "load": load()}
                print(f"{label:<11} back to processing in {seconds:.1f} s, every case restored after "
                      f"{full if full is not None else float('nan'):.1f} s, peak RSS {rss:,.0f} MB, "
                      f"open-cases gauge {results[label]['open_cases_gauge']:,.0f} (load {load()})")
            run.stop()
        finally:
            broker.stop()
    results["load_at_end"] = load()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    print(f"results    {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
