"""The IoT fast path at city scale against an at-least-once aiokafka passthrough, on one fresh local broker.

    .venv/bin/python bench/iot.py [--devices 100000] [--active 20000] [--readings 300000] [--rounds 2]

1. a city of ``--devices`` devices is generated (``streams city generate``); the registry's load time is
   measured, and the real worker's start-up time (process start → healthy) with that city beside the sample
   city's;
2. ``--readings`` readings of ``--active`` devices (one every 20 s per device, ~1 % over the threshold), Avro
   single-object encoded and keyed by device id as the gateway produces them, are loaded into iot.readings;
3. baseline: an at-least-once aiokafka passthrough of the same records — getmany → send all → await the acks
   → commit — into another topic;
4. the IoT fast path: the worker's own ``LeanIngest`` service (decode, registry, one-minute aggregates, alarm
   episodes, lift counters, the changelog and checkpoint, outputs acknowledged, offsets committed).
Both read the same records from the same broker in the same run, alternately, ``--rounds`` times each; the
best of each is compared. Prints events/s of both and the ratio (the goal: ≥ 0.6).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.fernet import Fernet  # noqa: E402

from streams.local.kafka import LocalKafka, free_port  # noqa: E402

TZ = timezone(timedelta(hours=8))


def make_readings(knowledge: Any, active: int, count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, Avro value) of ``count`` readings of ``active`` sensors and lifts, in event-time order."""
    from streams.bus.codec import registry

    codec = registry()
    rng = random.Random(seed)
    devices = knowledge.devices
    pool = [(d, m, t) for d, m, t, _ in devices.iter_sensor_metrics()]
    pool += [(d, "ebike_detected", 1.0) for d, _ in devices.iter_kind("lift")]
    chosen = rng.sample(pool, min(active, len(pool)))
    start = datetime.now(TZ).replace(microsecond=0) - timedelta(hours=2)
    out: list[tuple[bytes, bytes]] = []
    step = 20.0 / len(chosen)   # every device once per 20 s of event time
    for i in range(count):
        device, metric, threshold = chosen[i % len(chosen)]
        at = start + timedelta(seconds=i * step)
        if metric == "ebike_detected":
            value = 1.0 if rng.random() < 0.01 else 0.0
        else:
            value = round(threshold * (1.4 if rng.random() < 0.01 else rng.uniform(0.1, 0.7)), 3)
        record = {"device_id": device, "ts": at.isoformat(timespec="seconds"), "metric": metric, "value": value}
        out.append((device.encode(), codec.encode("iot_reading", record)))
    return out


async def load(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for i in range(0, len(records), 5000):
            futures = [await producer.send(topic, value, key=key) for key, value in records[i:i + 5000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def passthrough(bootstrap: str, source: str, n: int, group: str) -> float:
    """At-least-once aiokafka passthrough: getmany → send all → await acks → commit. Returns records/s."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all", max_batch_size=256 * 1024)
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000, fetch_max_bytes=32 * 1024 * 1024)
    await producer.start()
    await consumer.start()
    moved, started = 0, None
    try:
        while moved < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            records = [r for recs in batches.values() for r in recs]
            if not records:
                continue
            if started is None:
                started = time.perf_counter()
            futures = [await producer.send(source + ".passthrough", r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
            await consumer.commit()
            moved += len(records)
        return n / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


async def fast_path(settings: Any, n: int) -> tuple[float, dict[str, float]]:
    """The worker's LeanIngest over the same records. Returns (records/s, output counts)."""
    from streams.agents.app import Pipeline
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lean import LeanIngest

    pipeline = Pipeline(settings)
    done = asyncio.Event()
    timing: dict[str, float] = {}

    class Timed(LeanIngest):
        seen = 0

        async def run_batch(self, batches: Any) -> None:
            count = sum(len(r) for r in batches.values())
            if count and "start" not in timing:
                timing["start"] = time.perf_counter()
            await super().run_batch(batches)
            self.seen += count
            if self.seen >= n and not done.is_set():
                timing["end"] = time.perf_counter()   # outputs, state and offsets of the last batch are durable
                done.set()

    adapter = IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics,
                            classify_batches=False)
    emitted = {"device_minutes": 0}
    emit_result = adapter.emit_result

    def counting(out: Any, result: Any) -> None:   # the rows the fast path hands to the producer
        emitted["device_minutes"] += len(result.rows.get("device_minutes", ()))
        emit_result(out, result)

    adapter.emit_result = counting  # type: ignore[method-assign]
    worker = Timed(settings, adapter, pipeline.codec, pipeline.metrics)
    await worker.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=1800)
    finally:
        await worker.stop()
    m = pipeline.metrics
    counts = {"late": m.iot_late_readings._value.get(),  # noqa: SLF001 - a bench reads its own registry
              "dead_letters": sum(s.value for mf in m.dead_letters.collect() for s in mf.samples
                                  if s.name.endswith("_total"))}
    counts["minute_rows"] = emitted["device_minutes"]
    return n / (timing["end"] - timing["start"]), counts


def write_result(figures: dict[str, Any]) -> None:
    """bench/results/iot.json: the figures with the commit, date, cpu count and load they were measured at."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    out = REPO / "bench" / "results" / "iot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"commit": commit, "date": datetime.now(TZ).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}
    out.write_text(json.dumps({**meta, **figures}, indent=2, ensure_ascii=False) + "\n")
    print(f"results   {out}")


def worker_start_seconds(bootstrap: str, work: Path, city_dir: Path | None, prefix: str) -> float:
    """Seconds from `streams worker` process start to a healthy /health/."""
    web = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")},
           "CITYGRID_KAFKA_BOOTSTRAP": bootstrap, "CITYGRID_TOPIC_PREFIX": prefix, "CITYGRID_APP_ID": f"start-{prefix}",
           "CITYGRID_STORE_URL": f"chdb://{work / ('chdb-' + prefix)}", "CITYGRID_DATA_DIR": str(work / prefix),
           "CITYGRID_METRICS_PORT": str(free_port()), "CITYGRID_WEB_PORT": str(web), "CITYGRID_LOG_LEVEL": "warning",
           "CITYGRID_TOPIC_REPLICATION_FACTOR": "1", "CITYGRID_TOPIC_MIN_INSYNC_REPLICAS": "1",   # one local broker
           "PYTHONPATH": str(REPO),
           # the worker refuses to start without its keys (docs/security.md): throwaway ones for the bench
           "CITYGRID_PII_KEY": secrets.token_urlsafe(32), "CITYGRID_DLQ_KEY": Fernet.generate_key().decode()}
    if city_dir is not None:
        env["CITYGRID_CITY_DIR"] = str(city_dir)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=work,
                            stdout=open(work / f"{prefix}.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.monotonic() - started < 300:
            if proc.poll() is not None:
                tail = (work / f"{prefix}.log").read_text(errors="replace").splitlines()[-30:]
                raise SystemExit("worker exited:\n" + "\n".join(tail))
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web}/health/", timeout=1)
                return time.monotonic() - started
            except OSError:
                time.sleep(0.1)
        raise SystemExit("worker not healthy after 300 s")
    finally:
        with contextlib.suppress(ProcessLookupError):   # it may have exited on its own
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--active", type=int, default=20_000, help="devices that report in the run")
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--skip-worker-start", action="store_true", help="do not time the worker's start-up")
    args = parser.parse_args()

    from streams.agents.worker import ensure_topics
    from streams.bus.admin import create_topics
    from streams.bus.topics import IOT_READINGS, TopicNames
    from streams.core.knowledge.geo import City
    from streams.core.knowledge.knowledge import Knowledge
    from streams.core.knowledge.sensors import DeviceRegistry
    from streams.settings import Settings
    from streams.sources.city import write_city

    with tempfile.TemporaryDirectory(prefix="citygrid-bench-iot-") as tmp:
        work = Path(tmp)
        city_dir = work / "city"
        write_city(city_dir, args.devices)
        started = time.perf_counter()
        registry = DeviceRegistry.load(city_dir / "devices.yaml", City.load(city_dir / "city.yaml"))
        load_s = time.perf_counter() - started
        print(f"registry  {len(registry):,} devices (devices.csv) load in {load_s:.2f} s")
        knowledge = Knowledge.load(city_dir=city_dir)
        readings = make_readings(knowledge, args.active, args.readings, seed=7)

        broker = LocalKafka(work / "kafka").start()
        try:
            sample = city = 0.0
            if not args.skip_worker_start:
                sample = worker_start_seconds(broker.bootstrap, work, None, "start-sample")
                city = worker_start_seconds(broker.bootstrap, work, city_dir, "start-city")
                print(f"worker    start → healthy: {city:.1f} s with the {args.devices:,}-device city, "
                      f"{sample:.1f} s with the sample city")
            settings = Settings(kafka_bootstrap=broker.bootstrap, city_dir=city_dir, topic_prefix="bench",
                                topic_partitions=args.partitions, app_id="bench-iot", data_dir=work / "worker",
                                metrics_port=free_port(), web_port=free_port(), log_level="warning",
                                topic_replication_factor=1, topic_min_insync_replicas=1)   # one local broker
            ensure_topics(settings)
            source = TopicNames("bench").name(IOT_READINGS)
            create_topics(settings, [source + ".passthrough"])
            asyncio.run(load(broker.bootstrap, source, readings))
            n = len(readings)
            base, fast = [], []
            counts: dict[str, float] = {}
            for r in range(args.rounds):
                base.append(asyncio.run(passthrough(broker.bootstrap, source, n, f"bench-passthrough-{r}")))
                print(f"  round {r + 1}: passthrough {base[-1]:,.0f} records/s", flush=True)
                round_settings = settings.model_copy(update={"app_id": f"bench-iot-{r}"})
                ensure_topics(round_settings)   # a fresh consumer group and state changelog each round
                rate, counts = asyncio.run(fast_path(round_settings, n))
                fast.append(rate)
                print(f"  round {r + 1}: IoT fast path {fast[-1]:,.0f} records/s", flush=True)
            print(f"baseline  at-least-once aiokafka passthrough (getmany → send all → await acks → commit): "
                  f"{max(base):,.0f} records/s")
            print(f"iot       fast path (decode, registry, one-minute aggregates, episodes, lift counters, changelog, "
                  f"commit): {max(fast):,.0f} records/s  [{n:,} readings of {args.active:,} devices; "
                  f"late {counts.get('late', 0):.0f}, dead letters {counts.get('dead_letters', 0):.0f}, "
                  f"device_minutes rows out {counts.get('minute_rows', 0):,.0f}]")
            print(f"ratio     iot / passthrough = {max(fast) / max(base):.3f} (goal ≥ 0.6)")
            write_result({
                "bench": "iot", "devices": args.devices, "active_devices": args.active, "readings": n,
                "rounds": args.rounds, "registry_load_s": round(load_s, 3),
                "worker_start_s": None if args.skip_worker_start else {"city": round(city, 2),
                                                                      "sample": round(sample, 2)},
                "passthrough_per_s": round(max(base)), "iot_per_s": round(max(fast)),
                "ratio": round(max(fast) / max(base), 3), "goal_ratio": 0.6,
                "passthrough_rounds": [round(x) for x in base], "iot_rounds": [round(x) for x in fast],
                "counts": counts})
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
