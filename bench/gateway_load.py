"""Load run of the HTTP gateway on loopback: batched JSON lines into POST /v1/feeds/hotline.calls.

    .venv/bin/python bench/gateway_load.py [--records 200000] [--batch 1000] [--concurrency 4] [--seconds 60]

On one fresh local broker:
 1. baseline: a bare aiokafka producer with the gateway's own settings (acks=all, idempotence) sending the
    same records already Avro-encoded: what Kafka and Python take at most, without HTTP and validation;
 2. the real `streams gateway` subprocess; an aiohttp client posts the records as JSON lines in batches of
    --batch with --concurrency requests in flight, bounded by --records and --seconds. Records/s = records
    accepted (202, counted from the answers and checked against the topic's end offsets) / wall time;
    p50/p99 of the request latency (one batch);
 3. single-record requests at concurrency 1: p50/p99 latency of one accepted record.
Prints the figures and the ratio gateway / baseline. Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.local.kafka import LocalKafka, free_port  # noqa: E402

KEY = "bench-feeder-key-0123456789"
PREFIX = "bench"


def call(i: int) -> dict:
    return {
        "call_id": f"B-{i}",
        "line": "12345",
        "received_at": "2026-11-20T09:30:00+08:00",
        "caller": f"1380000{i % 10000:04d}",
        "text": "钦江路15号有6户居室群租，人员很杂，影响居民生活",
        "address": "钦江路15号",
        "lat": 31.1725,
        "lon": 121.4062,
        "channel": "app",
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def baseline(bootstrap: str, n: int, batch: int, concurrency: int) -> float:
    """The gateway's own producer path (FeedProducer.send_many: acks=all, idempotence, one batch per
    partition) on pre-encoded records, same batch size and concurrency: no HTTP, no JSON, no validation."""
    from streams.bus.codec import registry
    from streams.gateway.producer import FeedProducer
    from streams.settings import Settings

    codec = registry()
    records = [
        (
            f"{PREFIX}.baseline",
            f"B-{i}".encode(),
            codec.encode("hotline_call", codec.from_json("hotline_call", call(i))),
        )
        for i in range(n)
    ]
    chunks = [records[i : i + batch] for i in range(0, n, batch)]
    producer = FeedProducer(Settings(kafka_bootstrap=bootstrap))
    await producer.start()
    queue: asyncio.Queue = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def worker() -> None:
        while not queue.empty():
            errors = await producer.send_many(queue.get_nowait())
            assert not any(errors), errors[:3]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await producer.stop()
    return n / elapsed


async def load(url: str, records: int, batch: int, concurrency: int, seconds: float) -> dict:
    import aiohttp

    bodies = []
    for start in range(0, records, batch):
        lines = [json.dumps(call(i), ensure_ascii=False) for i in range(start, min(records, start + batch))]
        bodies.append(("\n".join(lines)).encode())
    headers = {"X-Api-Key": KEY, "Content-Type": "application/x-ndjson"}
    latencies: list[float] = []
    accepted = rejected = errors = 0
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, rejected, errors
        while time.monotonic() < deadline:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/feeds/hotline.calls", data=body, headers=headers) as response:
                answer = await response.json()
            latencies.append(time.perf_counter() - t0)
            if response.status == 202:
                accepted += answer["accepted"]
                rejected += answer["rejected"]
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"accepted": accepted, "rejected": rejected, "errors": errors, "elapsed": elapsed, "latencies": latencies}


async def singles(url: str, count: int) -> list[float]:
    """One record per request, one request in flight: the latency a single accepted record sees."""
    import aiohttp

    out: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(count):
            body = json.dumps(call(10_000_000 + i)).encode()
            t0 = time.perf_counter()
            async with session.post(
                f"{url}/v1/feeds/hotline.calls",
                data=body,
                headers={"X-Api-Key": KEY, "Content-Type": "application/json"},
            ) as response:
                await response.read()
            if response.status == 202:
                out.append(time.perf_counter() - t0)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to express the gateway's cost per record
    independently of how busy the machine's other processes keep its cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    total = sum(consumer.end_offsets(partitions).values())
    consumer.close()
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--profile", type=Path, default=None, help="run the gateway under cProfile, stats to this file")
    args = parser.parse_args()

    from streams.bus.topics import TopicNames

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        base = Path(tmp)
        broker = LocalKafka(base / "kafka")
        gateway = None
        try:
            broker.start()
            broker.create_topics(TopicNames(PREFIX).all() + [f"{PREFIX}.baseline"], partitions=4)
            base_rate = asyncio.run(
                baseline(broker.bootstrap, min(args.records, 100_000), args.batch, args.concurrency)
            )
            print(
                f"baseline (the gateway's producer on pre-encoded records, no HTTP/validation): "
                f"{base_rate:,.0f} records/s",
                flush=True,
            )

            keys = base / "keys.yaml"
            keys.write_text(
                f"- {{name: bench, key: {KEY}, scopes: ['feed:hotline.calls'], "
                f"rate_limit: 100000/second, record_rate_limit: 10000000/second}}\n",
                encoding="utf-8",
            )
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
            env.update(
                {
                    "CITYGRID_KAFKA_BOOTSTRAP": broker.bootstrap,
                    "CITYGRID_TOPIC_PREFIX": PREFIX,
                    "CITYGRID_STORE_URL": f"chdb://{base / 'chdb'}",
                    "CITYGRID_GATEWAY_KEYS_FILE": str(keys),
                    "CITYGRID_GATEWAY_PORT": str(port),
                    "CITYGRID_LOG_LEVEL": "warning",
                    "PYTHONPATH": str(REPO),
                }
            )
            log = open(base / "gateway.log", "ab")
            profile = ["-m", "cProfile", "-o", str(args.profile.resolve())] if args.profile else []
            gateway = subprocess.Popen(
                [sys.executable, *profile, "-m", "streams.cli", "gateway"],
                env=env,
                cwd=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if json.loads(urllib.request.urlopen(f"{url}/health", timeout=2).read())["kafka"]:
                        break
                except OSError:
                    if time.monotonic() > deadline or gateway.poll() is not None:
                        raise RuntimeError((base / "gateway.log").read_text(errors="replace")[-3000:]) from None
                    time.sleep(0.3)

            cpu_before = cpu_seconds(gateway.pid)
            result = asyncio.run(load(url, args.records, args.batch, args.concurrency, args.seconds))
            cpu_used = cpu_seconds(gateway.pid) - cpu_before
            single = asyncio.run(singles(url, 300))
            rate = result["accepted"] / result["elapsed"]
            on_topic = end_offsets(broker.bootstrap, f"{PREFIX}.hotline.calls")
            lat = result["latencies"]
            print(
                f"gateway: {result['accepted']:,} records accepted in {result['elapsed']:.1f}s "
                f"({len(lat)} requests of {args.batch} JSON lines, {args.concurrency} in flight): {rate:,.0f} records/s"
            )
            print(
                f"  batch request latency p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(lat, 0.99) * 1000:.0f} ms; rejected {result['rejected']}, errors {result['errors']}"
            )
            print(
                f"  single-record request latency p50 {percentile(single, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(single, 0.99) * 1000:.1f} ms ({len(single)} requests, one in flight)"
            )
            print(f"  records on the topic: {on_topic:,} (accepted + single: {result['accepted'] + len(single):,})")
            per_cpu = result["accepted"] / cpu_used if cpu_used else float("nan")
            print(
                f"  gateway CPU during the batched run: {cpu_used:.1f}s for {result['accepted']:,} records = "
                f"{per_cpu:,.0f} records per CPU-second (the rate with one core to itself); "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            print(f"  ratio gateway / baseline: {rate / base_rate:.2f}")
            if on_topic < result["accepted"]:
                print("ERROR: fewer records on the topic than accepted", file=sys.stderr)
                return 1
        finally:
            if gateway is not None and gateway.poll() is None:
                gateway.terminate()
                try:
                    gateway.wait(30)
                except subprocess.TimeoutExpired:
                    gateway.kill()
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
