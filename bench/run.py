"""Throughput and latency of the hotline slice on the real broker, against the Python ceiling.

    .venv/bin/python bench/run.py [--calls 20000] [--latency-calls 3000]

In one process tree, on one fresh local broker:
 1. baseline: a bare aiokafka getmany → send passthrough of N records (what Python can move at most);
 2. throughput: N hotline calls pre-loaded, then the real worker (`streams worker` subprocess, chdb store)
    drains them; sustained events/s = N / (time from the first to the last signal row stored);
 3. latency: calls produced at a steady rate under capacity; p50/p99 of (row stored in ClickHouse −
    call produced), read from the `signals` table afterwards.
Prints the figures and the ratio pipeline / baseline. Speed goals are ratios, never absolute numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.local.kafka import LocalKafka, free_port  # noqa: E402

ROWS = "citygrid_clickhouse_rows_written_total"


def stored_calls(url: str) -> float:
    """Calls that reached ClickHouse: as a signal, or as a triage row (人工分拨) when the classifier is unsure."""
    return metric(url, ROWS, 'table="signals"') + metric(url, ROWS, 'table="triage"')


async def baseline(bootstrap: str, n: int) -> float:
    """Bare aiokafka passthrough: consume n records from src, produce each to dst, commit. Returns msg/s."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    payload = b"x" * 300
    for i in range(n):
        await producer.send("bench.src", payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer("bench.src", bootstrap_servers=bootstrap, group_id="bench-baseline",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000)
    await consumer.start()
    moved = 0
    started = None
    while moved < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        for recs in batches.values():
            if started is None:
                started = time.perf_counter()
            futures = [await producer.send("bench.dst", r.value, key=r.key) for r in recs]
            await asyncio.gather(*futures)
            moved += len(recs)
        await consumer.commit()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    await consumer.stop()
    await producer.stop()
    return n / elapsed


def produce_calls(bootstrap: str, n: int, rate: float | None, seed: int) -> None:
    """n hotline calls of the city scenario (the whole district, its day), at ``rate``/s or all at once."""
    from kafka import KafkaProducer

    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources.scenario import ScenarioConfig, scenario_for

    scenario = scenario_for(Knowledge.load(), seed, ScenarioConfig(malformed_share=0.0), sources=["hotline"])
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.monotonic()
    start_ms = int(time.time() * 1000) - 6 * 3_600_000
    for i, record in enumerate(scenario.timeline(start_ms, count=n)):
        if rate:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.send("hotline.calls", record.payload())
    producer.flush()
    producer.close()


def metric(url: str, name: str, label: str = "") -> float:
    import urllib.request

    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_worker(bootstrap: str, workdir: Path, metrics_port: int) -> subprocess.Popen:
    from streams.security import demo_secrets

    env = {**os.environ, **demo_secrets(workdir / "keys"),
           "CITYGRID_KAFKA_BOOTSTRAP": bootstrap, "CITYGRID_STORE_URL": f"chdb://{workdir / 'chdb'}",
           "CITYGRID_DATA_DIR": str(workdir / "worker"), "CITYGRID_METRICS_PORT": str(metrics_port),
           "CITYGRID_WEB_PORT": str(free_port()), "CITYGRID_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=workdir,
                            stdout=open(workdir / "worker.log", "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_rows(url: str, target: float, timeout: float) -> tuple[float, float]:
    """Wait until `target` calls are stored in ClickHouse (signal or triage row) AND the lifecycle agent
    has put every signal on a case (opened + merged); returns (first row seen, done) monotonic times."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = stored_calls(url)
        on_cases = metric(url, "citygrid_cases_opened_total") + metric(url, "citygrid_dedup_merges_total")
        if stored > 0 and first is None:
            first = time.monotonic()
        if stored >= target and on_cases >= metric(url, ROWS, 'table="signals"'):
            return first or time.monotonic(), time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"bench: only {stored_calls(url)} of {target} calls stored")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--latency-calls", type=int, default=3000)
    parser.add_argument("--latency-rate", type=float, default=500.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citygrid-bench-") as tmp:
        work = Path(tmp)
        broker = LocalKafka(work / "kafka").start()
        try:
            base = asyncio.run(baseline(broker.bootstrap, args.calls))
            print(f"baseline  aiokafka getmany→send passthrough: {base:,.0f} msg/s")

            from streams.agents.worker import ensure_topics
            from streams.settings import Settings
            ensure_topics(Settings(kafka_bootstrap=broker.bootstrap))
            produce_calls(broker.bootstrap, args.calls, None, seed=7)
            metrics_port = free_port()
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            worker = start_worker(broker.bootstrap, work, metrics_port)
            try:
                first, done = wait_rows(url, args.calls, timeout=600)
                rate = args.calls / max(done - first, 1e-6)
                print(f"pipeline  hotline → signal → case (dedup, dispatch) → ClickHouse (chdb): {rate:,.0f} events/s sustained "
                      f"({args.calls} calls)")
                stored_before = stored_calls(url)
                produce_calls(broker.bootstrap, args.latency_calls, args.latency_rate, seed=8)
                wait_rows(url, stored_before + args.latency_calls, timeout=600)
            finally:
                stop(worker)
            from streams.storage import open_store
            store = open_store(f"chdb://{work / 'chdb'}")
            rows = store.query(
                "SELECT quantile(0.5)(stored_ms - ingest_ms) AS p50, quantile(0.99)(stored_ms - ingest_ms) AS p99, "
                "count() AS n FROM signals FINAL WHERE stored_ms > 0 AND ingest_ms >= "
                "(SELECT max(ingest_ms) FROM signals) - 3600000 AND signal_id IN "
                "(SELECT signal_id FROM signals ORDER BY ingest_ms DESC LIMIT %d)" % args.latency_calls)
            store.close()
            p = rows[0]
            print(f"latency   call produced → signal row in ClickHouse at {args.latency_rate:.0f}/s: "
                  f"p50 {p['p50']:.0f} ms, p99 {p['p99']:.0f} ms (n={p['n']})")
            print(f"ratio     pipeline / baseline = {rate / base:.3f}")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
