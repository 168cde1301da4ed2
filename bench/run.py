"""The case path at city scale, against a Kafka passthrough measured in the same run.

    .venv/bin/python bench/run.py [--events 20000] [--baseline-records 100000] [--paths lean,faust]
                                  [--latency-rate 1000] [--profile] [--json FILE] [--skip-two] [--skip-latency]

In one process tree, on one fresh local broker (and a private clickhouse-server for the runs that need it):

1. **baseline**: an at-least-once aiokafka passthrough of ``--baseline-records`` records (getmany → send all →
   await the acks → commit): what one Python process moves at most on this broker. Measured again at the end;
   a large difference means the machine was disturbed.
2. **case path, one worker**, for each of ``--paths`` (the ``case_path`` setting: lean consumers, Faust
   agents): N records of the city scenario's case-path feeds (streams/sources/scenario.py:
   hotline calls, field reports, camera alerts, registry changes over the whole district, with its bursts,
   follow-ups and 0.5 % malformed records) are loaded, then the real worker (`streams worker` subprocess,
   embedded chdb) drains them: validate, locate, classify, dedup, case, dispatch, rows in ClickHouse.
   Done when every expected outcome is stored (signals, triage and dead-letter rows, as an offline run of the
   same ingest predicts) and every signal is on a case. Sustained events/s = N / (first record read → done).
3. **one worker vs two** on clickhouse-server (chdb is one process): the same backlog, one worker, then two
   workers sharing the partitions.
4. **latency**: records at ``--latency-rate``/s into a running worker for ``--latency-seconds``; p50/p99 of
   ingest → dispatch from the worker's histogram.

``--profile`` records each path's one-worker run with py-spy and prints the functions where the time goes.
Prints the figures; writes JSON (default bench/results/case_path.json) with the commit, date, CPU count and the
load beside every figure. Speed goals are ratios to the baseline.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.meta import load, run_metadata  # noqa: E402
from streams.local.kafka import LocalKafka, free_port  # noqa: E402

CASE_PATH_SOURCES = ["hotline", "field", "camera", "registry"]
# the bench's broker is one local broker: topics with one replica (the workers get the same through their env)
SINGLE_BROKER = {"topic_replication_factor": 1, "topic_min_insync_replicas": 1}
RESULTS = REPO / "bench" / "results"


# ------------------------------------------------------------------------------------------- baseline
@dataclass
class Rate:
    """Records per second of wall time, and per CPU-second of the processes doing the work: on a machine
    shared with other jobs the first follows the load, the second much less."""
    per_s: float
    per_cpu_s: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included; chdb runs inside the worker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def passthrough(bootstrap: str, n: int, payload: bytes = b"x" * 400) -> Rate:
    """At-least-once passthrough: getmany → send all → await every ack → commit. Returns msg/s (and per
    CPU-second of this process while it moved them)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    src, dst = f"bench.src.{uuid.uuid4().hex[:6]}", f"bench.dst.{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_batch_size=256 * 1024)
    await producer.start()
    for i in range(n):
        await producer.send(src, payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"bench-{src}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000)
    await consumer.start()
    moved, started, cpu_started = 0, None, 0.0
    while moved < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        if not batches:
            continue
        if started is None:
            started, cpu_started = time.perf_counter(), time.process_time()
        futures = [await producer.send(dst, r.value, key=r.key) for recs in batches.values() for r in recs]
        await asyncio.gather(*futures)
        moved += len(futures)
        await consumer.commit()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    cpu = time.process_time() - cpu_started
    await consumer.stop()
    await producer.stop()
    return Rate(n / max(elapsed, 1e-6), n / max(cpu, 1e-6))


# ------------------------------------------------------------------------------------------- the feeds
def past_backlog(n: int, seed: int, margin_ms: int = 600_000) -> list[Any]:
    """N case-path records of the city scenario ending ``margin_ms`` before now: the input rules dead-letter
    an event time after the record reached Kafka, and which records that hits must not depend on when they are
    produced (the expected outcomes are predicted before)."""
    start = int(time.time() * 1000) - margin_ms
    for attempt in range(8):  # the diurnal pattern makes the span depend on the start: move back until it fits
        records = backlog(n, seed, start)
        overshoot = (records[-1].ts_ms if records else 0) - (int(time.time() * 1000) - margin_ms)
        if overshoot <= 0:
            return records
        # moving back by the overshoot can land the night in the span and lengthen it again: then a whole day
        start -= overshoot + margin_ms if attempt < 3 else 86_400_000
    raise SystemExit(f"bench: could not place {n} scenario records in the past")


def backlog(n: int, seed: int, start_ms: int) -> list[Any]:
    """N case-path records of the city scenario (GPS fixes are the lean path's: left out)."""
    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources.scenario import scenario_for

    scenario = scenario_for(Knowledge.load(), seed, sources=CASE_PATH_SOURCES)
    out = []
    for record in scenario.timeline(start_ms):
        if record.topic != "field.tracks":
            out.append(record)
            if len(out) >= n:
                break
    return out


def expected_outcomes(records: list[Any]) -> dict[str, int]:
    """What the worker must store for these records: the same ingest run offline (no Kafka)."""
    from streams.bus.codec import DecodeError, registry
    from streams.bus.topics import RAW_SCHEMAS
    from streams.core.ingest import Ingestor, RejectRecord
    from streams.core.knowledge.knowledge import Knowledge

    codec, ingestor = registry(), Ingestor(Knowledge.load())
    counts = collections.Counter()
    for record in records:
        try:
            # the input rules' event-time window against now: the records reach Kafka now
            raw = codec.decode(record.payload(), RAW_SCHEMAS[record.topic], ref_ms=int(time.time() * 1000))[1]
            result = ingestor.ingest(RAW_SCHEMAS[record.topic], raw, record.ts_ms)
        except (DecodeError, RejectRecord):
            counts["dead_letters"] += 1
            continue
        counts["signals"] += len(result.signals)
        counts["triage"] += len(result.triage)
    return dict(counts)


def produce(bootstrap: str, prefix: str, records: list[Any], rate: float | None = None) -> None:
    from kafka import KafkaProducer

    from streams.bus.topics import TopicNames

    names = TopicNames(prefix)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    started = time.monotonic()
    for i, record in enumerate(records):
        if rate:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.send(names.name(record.topic), record.payload())
    producer.flush()
    producer.close()


# ------------------------------------------------------------------------------------------- workers
def scrape(url: str) -> str:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return ""


def metric(url_or_text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples (with ``label`` in their labels), from a URL or scraped text."""
    text = scrape(url_or_text) if url_or_text.startswith("http") else url_or_text
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram(url: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a Prometheus histogram, summed over label sets."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    buckets: dict[float, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = re.match(rf'{name}_bucket{{.*le="([^"]+)".*}} (\S+)', line)
        if match:
            buckets[float(match.group(1))] += float(match.group(2))
    return sorted(buckets.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket holding the q-quantile (as Prometheus' histogram_quantile)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank, low, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return low
            return low + (upper - low) * (rank - below) / max(count - below, 1e-9)
        low, below = upper, count
    return low


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Run:
    bootstrap: str
    work: Path
    prefix: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:6]}")
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, store_url: str, **extra: str) -> Worker:
        from streams.security import demo_secrets

        index = len(self.workers)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
        env.update({"CITYGRID_KAFKA_BOOTSTRAP": self.bootstrap, "CITYGRID_TOPIC_PREFIX": self.prefix,
                    "CITYGRID_APP_ID": f"bench-{self.prefix}", "CITYGRID_STORE_URL": store_url,
                    "CITYGRID_DATA_DIR": str(self.work / f"{self.prefix}-worker{index}"),
                    "CITYGRID_METRICS_PORT": str(port), "CITYGRID_WEB_PORT": str(free_port()),
                    "CITYGRID_LOG_LEVEL": "warning", "PYTHONPATH": str(REPO),
                    "CITYGRID_TOPIC_REPLICATION_FACTOR": "1", "CITYGRID_TOPIC_MIN_INSYNC_REPLICAS": "1"})
        env.update(demo_secrets(self.work / "keys"))
        env.update({f"CITYGRID_{k.upper()}": v for k, v in extra.items()})
        log = self.work / f"{self.prefix}-worker{index}.log"
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=self.work,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(proc, f"http://127.0.0.1:{port}/metrics", log)
        self.workers.append(worker)
        return worker

    def total(self, name: str, label: str = "", texts: list[str] | None = None) -> float:
        return sum(metric(text, name, label) for text in (texts or self.scrape()))

    def scrape(self) -> list[str]:
        return [scrape(w.metrics_url) for w in self.workers]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def stored(run: Run, table: str, texts: list[str] | None = None) -> float:
    return run.total("citygrid_clickhouse_rows_written_total", f'table="{table}"', texts)


def log_tail(worker: Worker, lines: int = 30) -> str:
    try:
        return "\n".join(worker.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_done(run: Run, n: int, expected: dict[str, int], timeout: float,
              on_first: Any = None) -> tuple[float, float]:
    """(first record read, everything stored and on a case), monotonic. ``on_first()`` runs once the first
    record is read (the profiler starts there: the worker's start-up is not the case path)."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in run.workers:
            if worker.proc.poll() is not None:
                raise SystemExit(f"bench: a worker exited ({worker.proc.returncode}):\n{log_tail(worker)}")
        texts = run.scrape()  # one scrape a worker per poll: scraping costs the worker time too
        read = run.total("citygrid_events_in_total", texts=texts)
        if first is None and read > 0:
            first = time.monotonic()
            if on_first is not None:
                on_first()
        on_cases = (run.total("citygrid_cases_opened_total", texts=texts)
                    + run.total("citygrid_dedup_merges_total", texts=texts))
        if (read >= n and all(stored(run, t, texts) >= c for t, c in expected.items())
                and on_cases >= expected.get("signals", 0)):
            return first or time.monotonic(), time.monotonic()
        time.sleep(0.25)
    state = {t: stored(run, t) for t in expected}
    raise SystemExit(f"bench: not done after {timeout}s: expected {expected}, stored {state}, read "
                     f"{run.total('citygrid_events_in_total')}; logs in {run.work}")


def profile_summary(raw: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of the samples by function, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r" \(.*?/(site-packages|streams|lib/python[0-9.]+)/", " (", f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = lambda c: round(100.0 * c / max(total, 1), 1)  # noqa: E731
    return {"self": [(f, share(c)) for f, c in own.most_common(top)],
            "inclusive": [(f, share(c)) for f, c in inclusive.most_common(top)
                          if not f.startswith(("<module>", "run (asyncio", "_run_once", "run_forever",
                                               "run_until_complete", "_run (asyncio"))]}


# Where a sample's time goes, by the first of these found in its stack (checked in this order).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("case engine: dedup, case, dispatch (streams/core/cases)", ("CaseEngine.",)),
    ("ingest: decode, validate, locate, classify", ("IngestAdapter.", "Ingestor.", "SchemaRegistry.decode")),
    ("ClickHouse rows (sink, chdb insert)", ("ClickHouseSink.", "Store.insert", "ChdbStore.", "ServerStore.")),
    ("case state: RocksDB, changelog records", ("PartitionCaseState.", "_Documents.", "_Sources.", "_DiskTimers.")),
    ("outputs: encode and produce (Emitter, Faust topics)", ("Emitter.", "LifecycleAdapter.emit_outputs",
                                                             "Topic.publish_message", "Topic.send")),
    ("metrics: the bench's scrapes, gauges", ("WSGIRequestHandler.", "generate_latest", "GaugeService.")),
    ("Kafka client: fetch, produce, commit (aiokafka)", ("aiokafka/",)),
    ("lean consumers' own loop (casepath.py, bus/consumer.py, bus/stateful.py)",
     ("casepath.py", "bus/consumer.py", "bus/stateful.py", "bus/delivery.py", "lean.py")),
    ("Faust/mode machinery (streams, agents, services)", ("faust/", "mode/")),
]


def profile_stages(raw: Path) -> dict[str, float]:
    """Share of the samples by stage of the case path (see STAGES; the rest is asyncio, threads, ...)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        total += int(count_text)
        frames = stack.split(";")
        # on the event loop, only what runs inside a callback or task counts (Faust's worker wraps the loop)
        loop_frames = [i for i, frame in enumerate(frames) if "._run_once (" in frame and "asyncio" in frame]
        frames = frames[loop_frames[-1] + 1:] if loop_frames else frames
        for stage, markers in STAGES:
            if any(marker in frame for frame in frames for marker in markers):
                counts[stage] += int(count_text)
                break
        else:
            counts["other (the event loop itself: select, callbacks; threads)"] += int(count_text)
    return {stage: round(100.0 * n / max(total, 1), 1) for stage, n in counts.most_common()}


def case_path(bootstrap: str, work: Path, records: list[Any], expected: dict[str, int], store_urls: list[str],
              profile: Path | None = None, **worker_settings: str) -> Rate:
    """Load the backlog, start ``len(store_urls)`` workers, time the drain. Returns events/s and events per
    CPU-second of the workers (from their first record read until done)."""
    run = Run(bootstrap, work)
    from streams.agents.worker import ensure_topics
    from streams.settings import Settings

    ensure_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=run.prefix, **SINGLE_BROKER))
    produce(bootstrap, run.prefix, records)
    spies: list[subprocess.Popen[bytes]] = []
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profile is not None and not Path(spy_bin).exists():
        print("bench: py-spy is not installed (pip install py-spy); no profile", file=sys.stderr)
        profile = None

    cpu_at_first: list[float] = []

    def start_profile() -> None:
        cpu_at_first.extend(cpu_seconds(w.proc.pid) for w in run.workers)
        if profile is not None:
            spies.append(subprocess.Popen([spy_bin, "record", "--pid", str(run.workers[0].proc.pid), "--rate", "100",
                                           "--format", "raw", "--output", str(profile), "--nonblocking"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        for url in store_urls:
            run.start_worker(url, **worker_settings)
        first, done = wait_done(run, len(records), expected, timeout=900, on_first=start_profile)
        cpu = sum(cpu_seconds(w.proc.pid) for w in run.workers) - sum(cpu_at_first)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        run.stop()
    return Rate(len(records) / max(done - first, 1e-6), len(records) / max(cpu, 1e-6))


def latency(bootstrap: str, work: Path, records: list[Any], store_url: str, rate: float,
            warm_up: int = 50, **worker_settings: str) -> dict[str, float]:
    """p50/p99 ingest → dispatch while ``records`` arrive at ``rate``/s into a running worker.

    The first ``warm_up`` records go in before the clock starts (the worker is ready when it has read them: its
    partitions are assigned and its state restored); the quantiles are of the dispatches after that."""
    run = Run(bootstrap, work)
    from streams.agents.worker import ensure_topics
    from streams.settings import Settings

    ensure_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=run.prefix, **SINGLE_BROKER))
    try:
        worker = run.start_worker(store_url, **worker_settings)
        produce(bootstrap, run.prefix, records[:warm_up])
        deadline = time.monotonic() + 180
        while metric(worker.metrics_url, "citygrid_events_in_total") < warm_up:
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise SystemExit(f"bench: the latency worker did not start:\n{log_tail(worker)}")
            time.sleep(0.2)
        time.sleep(2)  # the warm-up's cases dispatched
        before = dict(histogram(worker.metrics_url, "citygrid_ingest_to_dispatch_seconds"))
        produce(bootstrap, run.prefix, records[warm_up:], rate=rate)
        deadline = time.monotonic() + 60
        while metric(worker.metrics_url, "citygrid_events_in_total") < len(records) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        after = histogram(worker.metrics_url, "citygrid_ingest_to_dispatch_seconds")
    finally:
        run.stop()
    buckets = [(upper, count - before.get(upper, 0.0)) for upper, count in after]
    return {"p50_ms": round(1000 * quantile(buckets, 0.5), 1), "p99_ms": round(1000 * quantile(buckets, 0.99), 1),
            "dispatches": buckets[-1][1] if buckets else 0}


GOALS = {"case_path_events_per_s": 10_000, "case_path_events_per_s_must": 5_000, "latency_p99_ms": 200,
         "latency_rate": 1_000}


def figure(rate: Rate, base: Rate | None = None) -> dict[str, Any]:
    """One measured figure with the load it was measured under (and its ratios to the passthrough)."""
    out: dict[str, Any] = {"value": round(rate.per_s), "per_cpu_second": round(rate.per_cpu_s), "load": load()}
    if base:
        out["ratio"] = round(rate.per_s / base.per_s, 3)
        out["cpu_ratio"] = round(rate.per_cpu_s / base.per_cpu_s, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--baseline-records", type=int, default=100_000,
                        help="records the passthrough moves (more than --events: it is fast and noisy)")
    parser.add_argument("--paths", default="lean,faust", help="case paths to measure (case_path setting)")
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="py-spy each path's one-worker run")
    parser.add_argument("--skip-two", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS / "case_path.json")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    results: dict[str, Any] = {"bench": "case_path", **run_metadata(), "events": args.events,
                               "baseline_records": args.baseline_records, "goals": GOALS, "paths": {}}
    with tempfile.TemporaryDirectory(prefix="citygrid-bench-") as tmp:
        work = Path(tmp)
        broker = LocalKafka(work / "kafka").start()
        server = None
        try:
            base = asyncio.run(passthrough(broker.bootstrap, args.baseline_records))
            results["passthrough"] = figure(base)
            print(f"baseline   at-least-once aiokafka passthrough: {base.per_s:,.0f} msg/s, "
                  f"{base.per_cpu_s:,.0f} msg per CPU-second (load {load()})")
            records = past_backlog(args.events, args.seed)
            expected = expected_outcomes(records)
            results["expected"] = expected
            for path in paths:
                profile = work / f"profile-{path}.raw" if args.profile else None
                rate = case_path(broker.bootstrap, work, records, expected, [f"chdb://{work / f'chdb-{path}'}"],
                                 profile, case_path=path)
                entry: dict[str, Any] = {"one_worker_chdb": figure(rate, base)}
                results["paths"][path] = entry
                print(f"case path  {path:<5} one worker, chdb: {rate.per_s:,.0f} events/s, {rate.per_cpu_s:,.0f} per "
                      f"CPU-second ({args.events} records: {expected}); ratio {rate.per_s / base.per_s:.3f}, per "
                      f"CPU-second {rate.per_cpu_s / base.per_cpu_s:.3f} (load {load()})")
                if profile is not None and profile.exists():
                    entry["profile"] = {**profile_summary(profile), "stages": profile_stages(profile)}
                    print(f"profile    {path}: self time (share of samples):")
                    for frame, share in entry["profile"]["self"][:15]:
                        print(f"  {share:5.1f} %  {frame}")
                    print(f"profile    {path}: by stage:")
                    for stage, share in entry["profile"]["stages"].items():
                        print(f"  {share:5.1f} %  {stage}")
                if not args.skip_latency:
                    n = int(args.latency_rate * args.latency_seconds)
                    lat_records = past_backlog(n, args.seed + 1)
                    lat = latency(broker.bootstrap, work, lat_records, f"chdb://{work / f'chdb-latency-{path}'}",
                                  args.latency_rate, case_path=path)
                    entry["latency"] = {"rate": args.latency_rate, **lat, "load": load()}
                    print(f"latency    {path:<5} ingest → dispatch at {args.latency_rate:.0f} events/s: "
                          f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms ({lat['dispatches']:.0f} "
                          f"dispatches; load {load()})")
            if not args.skip_two:
                from streams.local.clickhouse import LocalClickHouseServer

                server = LocalClickHouseServer(work / "clickhouse")
                server.start()
                path = paths[0]
                single = case_path(broker.bootstrap, work, records, expected, [server.store_url("one")],
                                   case_path=path)
                one = figure(single, base)
                double = case_path(broker.bootstrap, work, records, expected,
                                   [server.store_url("two"), server.store_url("two")], case_path=path)
                two = figure(double, base)
                results["scale_out"] = {"path": path, "one_worker": one, "two_workers": two,
                                        "two_over_one": round(double.per_s / single.per_s, 2)}
                print(f"scale-out  {path} on clickhouse-server: one worker {single.per_s:,.0f} events/s, two "
                      f"workers {double.per_s:,.0f} events/s (x{double.per_s / single.per_s:.2f} on "
                      f"{os.cpu_count()} cores; load {load()})")
            end = asyncio.run(passthrough(broker.bootstrap, args.baseline_records))
            results["passthrough_at_end"] = figure(end)
            print(f"baseline   passthrough again at the end: {end.per_s:,.0f} msg/s, {end.per_cpu_s:,.0f} msg per "
                  f"CPU-second (load {load()})")
        finally:
            if server is not None:
                server.stop()
            broker.stop()
    results["load_at_end"] = load()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    print(f"results    {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
