"""WebhookDeliverer against the real Kafka broker and real HTTP receivers on loopback."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from streams.bus.topics import WEBHOOK_DELIVERIES, WEBHOOK_DLQ, TopicNames
from streams.local.kafka import LocalKafka
from streams.settings import REPO_DIR, Settings
from streams.sinks.webhooks import WebhooksConfig, build_deliveries, encode_delivery, sign, verify_signature
from streams.sinks.webhooks.deliver import WebhookDeliverer
from streams.sinks.webhooks.metrics import PrometheusWebhookMetrics
from streams.sinks.webhooks.redeliver import partitions_of, read_deliveries, redeliver

pytestmark = pytest.mark.kafka

SECRET = "receiver-shared-secret-0001"
DEPTS = ("房管办", "城管执法中队", "市场监管所", "消防救援站")

# ---- a department's receiving system, controlled by the test -------------------------------------------

Behaviour = Callable[["Hit"], Awaitable[web.StreamResponse]]


@dataclass
class Hit:
    path: str
    key: str
    attempt: int
    case_id: str
    kind: str
    signature_ok: bool
    body: dict[str, Any]
    at: float
    status: int = 0


@dataclass
class Receiver:
    """Verifies signatures, deduplicates by idempotency key (as a department should) and records all."""

    secret: str = SECRET
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    processed: Counter = field(default_factory=Counter)         # key -> times acted upon (after dedup)
    acknowledged: Counter = field(default_factory=Counter)      # key -> 2xx answers (before dedup)
    order: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))  # (path, case) -> keys
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ok = verify_signature(self.secret, request.headers.get("X-Citygrid-Timestamp", ""), raw,
                              request.headers.get("X-Citygrid-Signature", ""))
        body = json.loads(raw)
        hit = Hit(request.path, request.headers["Idempotency-Key"], int(request.headers["X-Citygrid-Attempt"]),
                  body["case"]["case_id"], body["kind"], ok, body, time.monotonic())
        self.hits.append(hit)
        if not ok:
            hit.status = 401
            return web.Response(status=401, text="bad signature")
        behaviour = self.behaviours.get(request.path)
        response = await behaviour(hit) if behaviour else web.Response(status=200)
        hit.status = response.status
        if 200 <= response.status < 300:
            self.acknowledged[hit.key] += 1
            if self.processed[hit.key] == 0:  # dedup: act on each key once
                self.order[(hit.path, hit.case_id)].append(hit.key)
            self.processed[hit.key] += 0 if self.processed[hit.key] else 1
        return response

    def hits_for(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


@pytest.fixture
async def receiver() -> Any:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{dept}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


# ---- helpers ------------------------------------------------------------------------------------------


def make_config(receiver: Receiver, **policy: Any) -> dict[str, Any]:
    endpoints = {d: {"url": f"{receiver.url}/{i}", "secret": SECRET, "timeout_seconds": 5, "max_in_flight": 4,
                     "rate_per_second": 500, "burst": 100} for i, d in enumerate(DEPTS)}
    for dept, override in policy.pop("endpoints", {}).items():
        endpoints[dept].update(override)
    base = {"links_base_url": "https://grid.example.gov.cn", "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.5, "breaker_failures": 50, "breaker_reset_seconds": 0.2,
            "commit_interval_seconds": 0.1, "endpoints": endpoints}
    base.update(policy)
    return base


def path_of(dept: str) -> str:
    return f"/{DEPTS.index(dept)}"


def notification(case_id: str, event_id: str, departments: list[str], kind: str = "dispatch") -> dict[str, Any]:
    return {"kind": kind, "case_id": case_id, "ts_ms": 1_773_540_000_000, "departments": departments,
            "category_code": "0107", "category_name": "群租", "level": 3, "deadline_ms": 1_773_600_000_000,
            "address": "徐汇区天平路100弄3号", "lat": 31.2035, "lon": 121.4452, "cell": "8a309a6ba4f7fff",
            "street": "天平路街道", "event_id": event_id, "caller": "13812345678"}


def settings_for(kafka: LocalKafka, topic_prefix: str) -> Settings:
    return Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, app_id=f"wh-{topic_prefix}")


def webhook_topics(settings: Settings) -> list[str]:
    """webhook.deliveries and its dead-letter topic under the test's prefix."""
    names = TopicNames(settings.topic_prefix)
    return [names.name(WEBHOOK_DELIVERIES), names.name(WEBHOOK_DLQ)]


async def produce(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            key, value = encode_delivery(record)
            await producer.send(TopicNames(settings.topic_prefix).name(WEBHOOK_DELIVERIES), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(settings: Settings, logical: str) -> list[dict[str, Any]]:
    assert await partitions_of(settings, TopicNames(settings.topic_prefix).name(logical)), f"{logical} does not exist"
    return await read_deliveries(settings, logical)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


@dataclass
class Running:
    deliverer: WebhookDeliverer
    task: asyncio.Task
    rows: list[dict[str, Any]]
    metrics: PrometheusWebhookMetrics

    def rows_for(self, key: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["idempotency_key"] == key]

    def sample(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def stop(self) -> None:
        await self.deliverer.stop()
        await self.task


@pytest.fixture
async def start(kafka: LocalKafka, topic_prefix: str) -> Any:
    running: list[Running] = []
    settings = settings_for(kafka, topic_prefix)
    kafka.create_topics(webhook_topics(settings), partitions=4)

    async def _start(config: dict[str, Any]) -> Running:
        rows: list[dict[str, Any]] = []
        metrics = PrometheusWebhookMetrics(CollectorRegistry())
        deliverer = WebhookDeliverer(settings, WebhooksConfig.model_validate(config), metrics=metrics,
                                     sink=lambda table, new: rows.extend(dict(r, table=table) for r in new))
        task = asyncio.create_task(deliverer.run())
        r = Running(deliverer, task, rows, metrics)
        running.append(r)
        await asyncio.wait_for(deliverer.started.wait(), 60)
        return r

    yield _start
    for r in running:
        if not r.task.done():
            await r.stop()


# ---- the tests -------------------------------------------------------------------------------------------


async def test_success_signed_and_recorded(kafka: LocalKafka, topic_prefix: str, receiver: Receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver)
    records = build_deliveries(notification("XH03-20260315-00000001", "ev-1", ["房管办", "城管执法中队", "物业公司"]),
                               WebhooksConfig.model_validate(config))
    assert len(records) == 2  # 物业公司 has no endpoint
    run = await start(config)
    await produce(settings, records)
    await eventually(lambda: len(receiver.processed) == 2, "both departments delivered")
    for record in records:
        [hit] = [h for h in receiver.hits if h.key == record["idempotency_key"]]
        assert hit.signature_ok and hit.attempt == 1 and hit.path == path_of(record["department"])
        assert hit.body == json.loads(record["payload"]) and "13812345678" not in record["payload"]
    await eventually(lambda: len([r for r in run.rows if r["status"] == "delivered"]) == 2, "rows")
    row = run.rows_for(records[0]["idempotency_key"])[0]
    assert row["table"] == "webhook_deliveries" and row["http_status"] == 200 and row["attempt"] == 1
    assert row["delivery_id"] == records[0]["delivery_id"] and row["latency_ms"] > 0
    assert run.sample("citygrid_webhook_deliveries_total", {"department": "房管办", "outcome": "delivered"}) == 1
    assert run.sample("citygrid_webhook_delivery_seconds_count", {"department": "房管办"}) == 1
    await eventually(lambda: run.sample("citygrid_webhook_pending", {}) == 0, "nothing pending")


async def test_500_then_success_retries_with_increasing_attempts(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver)

    async def flaky(hit: Hit) -> web.Response:
        return web.Response(status=500 if hit.attempt <= 2 else 200)

    receiver.behaviours[path_of("房管办")] = flaky
    records = build_deliveries(notification("XH03-20260315-00000002", "ev-2", ["房管办"]),
                               WebhooksConfig.model_validate(config))
    run = await start(config)
    await produce(settings, records)
    key = records[0]["idempotency_key"]
    await eventually(lambda: receiver.processed[key] == 1, "delivered after two 500s")
    assert [h.attempt for h in receiver.hits] == [1, 2, 3]
    assert [h.status for h in receiver.hits] == [500, 500, 200]
    await eventually(lambda: len(run.rows_for(key)) == 3, "three attempt rows")
    assert [(r["attempt"], r["status"], r["http_status"]) for r in run.rows_for(key)] == [
        (1, "retry", 500), (2, "retry", 500), (3, "delivered", 200)]
    assert await read_topic(settings, WEBHOOK_DLQ) == []


async def test_429_honours_retry_after(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver, backoff_initial_seconds=0.01, backoff_max_seconds=0.02)

    async def throttled(hit: Hit) -> web.Response:
        if hit.attempt == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=202)

    receiver.behaviours[path_of("市场监管所")] = throttled
    records = build_deliveries(notification("XH03-20260315-00000003", "ev-3", ["市场监管所"]),
                               WebhooksConfig.model_validate(config))
    await start(config)
    await produce(settings, records)
    await eventually(lambda: receiver.processed[records[0]["idempotency_key"]] == 1, "delivered after 429")
    first, second = receiver.hits
    assert (first.status, second.status, second.attempt) == (429, 202, 2)
    # backoff alone would have retried after ≤ 20 ms; Retry-After asked for 2 s (a lower bound, not a race)
    assert second.at - first.at >= 1.9


async def test_hanging_endpoint_does_not_block_others_and_timeouts_retry(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    release = asyncio.Event()
    config = make_config(receiver, endpoints={"房管办": {"timeout_seconds": 300, "max_in_flight": 1},
                                              "消防救援站": {"timeout_seconds": 0.5}})

    async def hang_until_released(hit: Hit) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    async def hang_first_attempt(hit: Hit) -> web.Response:
        if hit.attempt == 1:
            await asyncio.sleep(3600)  # the client gives up after 0.5 s
        return web.Response(status=200)

    receiver.behaviours[path_of("房管办")] = hang_until_released
    receiver.behaviours[path_of("消防救援站")] = hang_first_attempt
    cfg = WebhooksConfig.model_validate(config)
    records = []
    for i in range(20):  # the same cases go to all three departments
        records += build_deliveries(
            notification(f"XH03-20260315-1{i:07d}", f"ev-h{i}", ["房管办", "城管执法中队"]), cfg)
    fire = build_deliveries(notification("XH03-20260315-2000000", "ev-fire", ["消防救援站"], kind="alarm"), cfg)
    run = await start(config)
    await produce(settings, records + fire)
    others = [r["idempotency_key"] for r in records if r["department"] == "城管执法中队"]
    await eventually(lambda: all(receiver.processed[k] == 1 for k in others), "城管执法中队 gets all 20")
    await eventually(lambda: receiver.processed[fire[0]["idempotency_key"]] == 1, "消防救援站 after a timeout")
    # 房管办 is still stuck on its first request (max_in_flight 1), yet the others were all delivered
    assert len(receiver.hits_for(path_of("房管办"))) == 1 and not release.is_set()
    fire_rows = run.rows_for(fire[0]["idempotency_key"])
    assert fire_rows[0]["status"] == "retry" and "timeout" in fire_rows[0]["error"] and fire_rows[0]["http_status"] == 0
    release.set()
    hanging = [r["idempotency_key"] for r in records if r["department"] == "房管办"]
    await eventually(lambda: all(receiver.processed[k] == 1 for k in hanging), "房管办 catches up once released")


async def test_400_goes_to_dead_letter_without_retry(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver)

    async def reject(hit: Hit) -> web.Response:
        return web.Response(status=400, text="unknown case")

    receiver.behaviours[path_of("房管办")] = reject
    records = build_deliveries(notification("XH03-20260315-00000004", "ev-4", ["房管办", "城管执法中队"]),
                               WebhooksConfig.model_validate(config))
    run = await start(config)
    await produce(settings, records)
    dead_key = records[0]["idempotency_key"]
    dead_labels = {"department": "房管办", "kind": "dispatch", "reason": "http_400"}
    await eventually(lambda: run.sample("citygrid_webhook_dead_letters_total", dead_labels) == 1, "dead")
    [dead] = await read_topic(settings, WEBHOOK_DLQ)
    assert dead["idempotency_key"] == dead_key and dead["http_status"] == 400 and dead["attempt"] == 1
    assert "http_400" in dead["error"] and dead["dead_ms"] > 0
    assert len(receiver.hits_for(path_of("房管办"))) == 1  # not retried
    assert [r["status"] for r in run.rows_for(dead_key)] == ["failed"]
    assert receiver.processed[records[1]["idempotency_key"]] == 1


async def test_wrong_secret_fails_verification_and_is_dead_lettered(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver, endpoints={"房管办": {"secret": "not-the-receivers-secret"}})
    records = build_deliveries(notification("XH03-20260315-00000005", "ev-5", ["房管办"]),
                               WebhooksConfig.model_validate(config))
    await start(config)
    await produce(settings, records)
    await eventually(lambda: len(receiver.hits) == 1 and receiver.hits[0].status == 401, "refused")
    assert not receiver.hits[0].signature_ok and receiver.processed == Counter()
    # the signature itself: right secret verifies, the sender's wrong one does not
    hit = receiver.hits[0]
    body = records[0]["payload"].encode()
    assert verify_signature("not-the-receivers-secret", int(time.time()), body,
                            sign("not-the-receivers-secret", int(time.time()), body))
    assert not verify_signature(SECRET, int(time.time()), body,
                                sign("not-the-receivers-secret", int(time.time()), body))
    assert hit.body == json.loads(body)
    for _ in range(300):  # 401 is not retried: the delivery is dead-lettered
        dlq = await read_topic(settings, WEBHOOK_DLQ)
        if dlq:
            break
        await asyncio.sleep(0.1)
    assert [d["http_status"] for d in dlq] == [401]
    assert len(receiver.hits) == 1


async def test_redeliver_from_dead_letters_with_filters(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver, max_attempts=2)
    down = {"on": True}

    async def outage(hit: Hit) -> web.Response:
        return web.Response(status=503 if down["on"] else 200)

    for dept in ("房管办", "城管执法中队"):
        receiver.behaviours[path_of(dept)] = outage
    cfg = WebhooksConfig.model_validate(config)
    records = build_deliveries(notification("XH03-20260315-00000006", "ev-6a", ["房管办", "城管执法中队"]), cfg)
    records += build_deliveries(notification("XH03-20260315-00000006", "ev-6b", ["房管办"], kind="urge"), cfg)
    run = await start(config)
    await produce(settings, records)
    await eventually(lambda: sum(1 for r in run.rows if r["status"] == "dead") == 3, "three dead after 2 attempts")
    dead = await read_topic(settings, WEBHOOK_DLQ)
    assert sorted(d["idempotency_key"] for d in dead) == sorted(r["idempotency_key"] for r in records)
    assert all(d["attempt"] == 2 and d["http_status"] == 503 and d["error"].startswith("max_attempts") for d in dead)
    down["on"] = False
    dry = await redeliver(settings, department="房管办", dry_run=True)
    assert len(dry) == 2 and receiver.processed == Counter()
    again = await redeliver(settings, department="房管办", kind="dispatch")
    assert [r["idempotency_key"] for r in again] == [records[0]["idempotency_key"]]
    await eventually(lambda: receiver.processed[records[0]["idempotency_key"]] == 1, "redelivered")
    last = [h for h in receiver.hits if h.key == records[0]["idempotency_key"]][-1]
    assert last.attempt == 1  # attempt count reset
    assert receiver.processed[records[1]["idempotency_key"]] == 0  # filtered out (other department)
    rest = await redeliver(settings, case_id="XH03-20260315-00000006")
    assert len(rest) == 3
    await eventually(lambda: all(receiver.processed[r["idempotency_key"]] == 1 for r in records), "all redelivered")
    # the receiver saw the already-delivered key twice but acted once
    assert receiver.acknowledged[records[0]["idempotency_key"]] == 2
    # the command line: a dry run lists the three (latest dead record per key), produces nothing
    env = {**os.environ, "CITYGRID_KAFKA_BOOTSTRAP": kafka.bootstrap, "CITYGRID_TOPIC_PREFIX": topic_prefix}
    env.pop("CITYGRID_SETTINGS_FILE", None)
    proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).parent / "streams"), "webhooks", "redeliver",
                                                "--case", "XH03-20260315-00000006", "--dry-run", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    keys = sorted(line.split("\t")[4] for line in out.decode().splitlines())
    assert keys == sorted(r["idempotency_key"] for r in records) and "would redeliver 3" in err.decode()


async def test_per_case_order_kept_through_retries(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver)
    rng = random.Random(6)
    failing = set()

    async def random_failures(hit: Hit) -> web.Response:
        # each key fails its first 0-2 attempts, decided once per key (500 or a 429 without Retry-After)
        if hit.key not in failing and hit.attempt == 1 and rng.random() < 0.5:
            failing.add(hit.key)
        if hit.key in failing and hit.attempt <= 2:
            return web.Response(status=rng.choice([500, 502, 429]))
        return web.Response(status=200)

    for dept in DEPTS:
        receiver.behaviours[path_of(dept)] = random_failures
    cfg = WebhooksConfig.model_validate(config)
    kinds = ["dispatch", "urge", "sla_yellow", "sla_red", "escalate", "closed"]
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    records: list[dict[str, Any]] = []
    for step, kind in enumerate(kinds):
        for c in range(12):
            depts = ["房管办", "城管执法中队"] if c % 2 else ["市场监管所"]
            case = notification(f"XH0{c % 4}-20260315-3{c:07d}", f"ev-{c}-{step}", depts, kind)
            for r in build_deliveries(case, cfg):
                records.append(r)
                expected[(path_of(r["department"]), r["case_id"])].append(r["idempotency_key"])
    await start(config)
    await produce(settings, records)
    await eventually(lambda: len(receiver.processed) == len(records), f"{len(records)} delivered", timeout=120)
    assert failing, "the receiver failed some deliveries"
    assert dict(receiver.order) == dict(expected)


async def test_max_attempts_dead_letter_and_breaker(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver, max_attempts=3, breaker_failures=2, breaker_reset_seconds=0.1)

    async def down(hit: Hit) -> web.Response:
        return web.Response(status=500)

    receiver.behaviours[path_of("房管办")] = down
    records = build_deliveries(notification("XH03-20260315-00000007", "ev-7", ["房管办"]),
                               WebhooksConfig.model_validate(config))
    run = await start(config)
    await produce(settings, records)
    key = records[0]["idempotency_key"]
    await eventually(lambda: any(r["status"] == "dead" for r in run.rows_for(key)), "dead after 3 attempts")
    assert [r["status"] for r in run.rows_for(key)] == ["retry", "retry", "dead"]
    assert [h.attempt for h in receiver.hits] == [1, 2, 3]
    assert run.sample("citygrid_webhook_breaker_open", {"department": "房管办"}) == 1
    [dead] = await read_topic(settings, WEBHOOK_DLQ)
    assert dead["idempotency_key"] == key and dead["attempt"] == 3


async def test_undecodable_record_is_recorded_not_delivered(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver)
    run = await start(config)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(TopicNames(settings.topic_prefix).name(WEBHOOK_DELIVERIES), b'{"not": "a delivery"}',
                                 key=b"x")
    await producer.stop()
    records = build_deliveries(notification("XH03-20260315-00000008", "ev-8", ["房管办"]),
                               WebhooksConfig.model_validate(config))
    await produce(settings, records)
    await eventually(lambda: receiver.processed[records[0]["idempotency_key"]] == 1, "the good one delivered")
    bad = [r for r in run.rows if r["table"] == "dead_letters"]
    assert len(bad) == 1 and "missing required field" in bad[0]["reason"] and bad[0]["key"] == "x"


# ---- a deliverer killed mid-retry ---------------------------------------------------------------------


async def test_killed_mid_retry_resumes_without_loss(kafka: LocalKafka, topic_prefix: str, receiver: Receiver,
                                                     tmp_path: Path) -> None:
    settings = settings_for(kafka, topic_prefix)
    kafka.create_topics(webhook_topics(settings), partitions=4)
    config = make_config(receiver, max_attempts=1000, backoff_initial_seconds=0.05, backoff_max_seconds=0.2)
    config_file = tmp_path / "webhooks.yaml"
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    failing = {"on": True}

    async def outage(hit: Hit) -> web.Response:
        return web.Response(status=500 if failing["on"] else 200)

    receiver.behaviours[path_of("房管办")] = outage
    cfg = WebhooksConfig.model_validate(config)
    records: list[dict[str, Any]] = []
    for i in range(40):
        records += build_deliveries(
            notification(f"XH0{i % 4}-20260315-4{i:07d}", f"ev-k{i}", ["房管办", "城管执法中队"]), cfg)
    env = {**os.environ, "CITYGRID_KAFKA_BOOTSTRAP": kafka.bootstrap, "CITYGRID_TOPIC_PREFIX": topic_prefix,
           "CITYGRID_APP_ID": f"wh-{topic_prefix}", "CITYGRID_WEBHOOKS_FILE": str(config_file),
           "CITYGRID_LOG_LEVEL": "warning"}
    env.pop("CITYGRID_SETTINGS_FILE", None)
    streams_bin = str(Path(sys.executable).parent / "streams")

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(streams_bin, "webhooks", "run", "--no-store", env=env, cwd=REPO_DIR,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=open(tmp_path / "deliverer.log", "ab"))

    await produce(settings, records)
    first = await spawn()
    try:
        fgb = [r["idempotency_key"] for r in records if r["department"] == "房管办"]
        others = [r["idempotency_key"] for r in records if r["department"] == "城管执法中队"]
        # mid-retry: every 房管办 delivery has failed at least twice, and the other department is served
        await eventually(lambda: all(sum(1 for h in receiver.hits if h.key == k) >= 2 for k in fgb),
                         "房管办 retrying every delivery", timeout=120)
        await eventually(lambda: all(receiver.processed[k] == 1 for k in others), "城管执法中队 delivered", timeout=120)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not any(receiver.processed[k] for k in fgb)
    failing["on"] = False
    before_restart = len(receiver.hits)
    second = await spawn()
    try:
        await eventually(lambda: all(receiver.processed[k] == 1 for k in fgb), "房管办 delivered after restart",
                         timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 60)
    assert second.returncode == 0, (tmp_path / "deliverer.log").read_text()
    assert len(receiver.hits) > before_restart
    # every key delivered (2xx) at least once, acted upon exactly once; nothing dead-lettered
    for record in records:
        key = record["idempotency_key"]
        assert receiver.acknowledged[key] >= 1 and receiver.processed[key] == 1, record["department"]
    assert set(receiver.processed) == {r["idempotency_key"] for r in records}
    assert all(h.signature_ok for h in receiver.hits)
    assert await read_topic(settings, WEBHOOK_DLQ) == []


# ---- outcomes in ClickHouse (embedded chdb, through the storage area's BatchWriter) ---------------------


async def test_outcomes_land_in_clickhouse(kafka: LocalKafka, topic_prefix: str, receiver: Receiver,
                                           request: pytest.FixtureRequest) -> None:
    from streams.storage import BatchWriter
    from tests.fixtures.clickhouse import open_test_store

    settings = settings_for(kafka, topic_prefix)
    kafka.create_topics(webhook_topics(settings), partitions=4)
    store = open_test_store("chdb", request)
    writer = BatchWriter(store, settings)
    writer_task = asyncio.create_task(writer.run())

    async def flaky(hit: Hit) -> web.Response:
        return web.Response(status=500 if hit.attempt == 1 else 200)

    async def reject(hit: Hit) -> web.Response:
        return web.Response(status=404)

    receiver.behaviours[path_of("房管办")] = flaky
    receiver.behaviours[path_of("市场监管所")] = reject
    config = make_config(receiver)
    records = build_deliveries(notification("XH03-20260315-00000009", "ev-9", ["房管办", "城管执法中队", "市场监管所"]),
                               WebhooksConfig.model_validate(config))
    deliverer = WebhookDeliverer(settings, WebhooksConfig.model_validate(config), sink=writer.add)
    task = asyncio.create_task(deliverer.run())
    try:
        await produce(settings, records)
        await eventually(lambda: len([h for h in receiver.hits if h.status]) == 4, "four responses")
        by_dept = {r["department"]: r for r in records}

        def rows() -> list[dict[str, Any]]:
            return store.query("SELECT department, attempt, status, http_status, idempotency_key, latency_ms, error "
                               "FROM webhook_deliveries ORDER BY department, attempt")

        await eventually(lambda: len(rows()) == 4, "four rows in ClickHouse", timeout=60)
        got = [(r["department"], r["attempt"], r["status"], r["http_status"]) for r in rows()]
        assert sorted(got) == sorted([("房管办", 1, "retry", 500), ("房管办", 2, "delivered", 200),
                                      ("城管执法中队", 1, "delivered", 200), ("市场监管所", 1, "failed", 404)])
        assert {r["idempotency_key"] for r in rows()} == {r["idempotency_key"] for r in by_dept.values()}
        assert all(r["latency_ms"] > 0 for r in rows())
    finally:
        await deliverer.stop()
        await task
        await writer.stop()
        await writer_task
        store.execute(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


async def test_per_endpoint_max_in_flight_and_rate_limit(kafka, topic_prefix, receiver, start) -> None:
    settings = settings_for(kafka, topic_prefix)
    config = make_config(receiver, endpoints={"房管办": {"max_in_flight": 2},
                                              "城管执法中队": {"rate_per_second": 5, "burst": 1}})
    concurrency = {"now": 0, "max": 0}

    async def slow(hit: Hit) -> web.Response:
        concurrency["now"] += 1
        concurrency["max"] = max(concurrency["max"], concurrency["now"])
        await asyncio.sleep(0.2)
        concurrency["now"] -= 1
        return web.Response(status=200)

    receiver.behaviours[path_of("房管办")] = slow
    cfg = WebhooksConfig.model_validate(config)
    records = []
    for i in range(10):  # ten different cases: ten lanes that could all go at once
        records += build_deliveries(
            notification(f"XH0{i % 4}-20260315-5{i:07d}", f"ev-r{i}", ["房管办", "城管执法中队"]), cfg)
    await start(config)
    await produce(settings, records)
    await eventually(lambda: len(receiver.processed) == len(records), "all delivered")
    assert concurrency["max"] == 2  # never more than max_in_flight, and the limit was reached
    limited = sorted(h.at for h in receiver.hits_for(path_of("城管执法中队")))
    # burst 1 at 5/s: ten requests need at least 9/5 s (a lower bound: load can only stretch it)
    assert len(limited) == 10 and limited[-1] - limited[0] >= 1.7
