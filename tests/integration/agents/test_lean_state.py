"""The lean IoT consumer on the real broker: keyed state in its compacted changelog survives a restart and a
rebalance between two workers — one signal per episode, one case per lift and day, no minute counted twice."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.agents.app import Pipeline
from streams.agents.ingest import IngestAdapter
from streams.agents.lean import LeanIngest
from streams.agents.worker import ensure_topics
from streams.bus.codec import registry
from streams.bus.topics import (
    CASE_INPUTS,
    DEVICE_EPISODES,
    IOT_COMMANDS,
    IOT_READINGS,
    STORE_ROWS,
    TopicNames,
    dlq,
    state_changelog,
)
from streams.core.ingest import Ingestor
from streams.local.kafka import LocalKafka, free_port
from streams.settings import Settings

pytestmark = pytest.mark.kafka
TZ = timezone(timedelta(hours=8))
LIFTS = ["LIFT-YGY-03-1", "LIFT-JN-12-1", "LIFT-LS-05-1"]


@pytest.fixture
def settings(kafka: LocalKafka, topic_prefix: str, tmp_path: Any) -> Settings:
    s = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, app_id=f"lean-{topic_prefix}",
                 topic_partitions=4, kafka_session_timeout_seconds=6, iot_lateness_seconds=5,
                 iot_idle_close_seconds=30, data_dir=tmp_path / "worker", metrics_port=free_port(),
                 web_port=free_port(), topic_replication_factor=1, topic_min_insync_replicas=1)  # one test broker
    ensure_topics(s)
    return s


@pytest.fixture
async def workers(settings: Settings) -> AsyncIterator[Callable[[], Any]]:
    started: list[LeanIngest] = []
    pipeline = Pipeline(settings)

    async def start() -> LeanIngest:
        adapter = IngestAdapter(Ingestor(pipeline.knowledge), pipeline.codec, pipeline.metrics, pipeline.topics,
                                classify_batches=False)
        worker = LeanIngest(settings, adapter, pipeline.codec, pipeline.metrics)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if not worker.should_stop:
            await worker.stop()


def produce(settings: Settings, readings: list[dict[str, Any]]) -> None:
    names = TopicNames(settings.topic_prefix)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for r in readings:
        producer.send(names.name(IOT_READINGS), json.dumps(r).encode(), key=r["device_id"].encode())
    producer.flush()
    producer.close()


def read(settings: Settings, logical: str) -> list[dict[str, Any]]:
    codec = registry()
    consumer = KafkaConsumer(TopicNames(settings.topic_prefix).name(logical),
                             bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=1500, enable_auto_commit=False)
    values = [codec.decode(m.value)[1] for m in consumer]
    consumer.close()
    return values


def reading(device: str, metric: str, value: float, at: datetime) -> dict[str, Any]:
    return {"device_id": device, "metric": metric, "value": value, "ts": at.isoformat(timespec="seconds")}


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def signals(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(v["signal"]) for v in read(settings, CASE_INPUTS) if v["kind"] == "signal"]


def minute_rows(settings: Settings) -> list[dict[str, Any]]:
    return [row for v in read(settings, STORE_ROWS) if v["table"] == "device_minutes" for row in json.loads(v["rows"])]


async def test_state_survives_a_restart_and_a_rebalance(settings: Settings, workers: Callable[[], Any]) -> None:
    # phases start on minute boundaries: a pause between two produce calls never splits a minute (an idle
    # partition's clock moves on by its idle time, which could make the rest of a split minute late)
    now = datetime.now(TZ).replace(second=0, microsecond=0) - timedelta(minutes=20)
    first = await workers()
    # a building vibrating around its threshold (二类: 2.5 mm/s) for 3 minutes, one reading every 2 s;
    # each lift detects an e-bike twice (the KB's repeat limit is 3 a day)
    vib = [reading("HB-WK-V01", "vibration_mm_s", 2.7 if i % 2 else 2.3, now + timedelta(seconds=2 * i))
           for i in range(90)]
    lifts = [reading(lift, "ebike_detected", 1.0, now + timedelta(minutes=1, seconds=10 * k))
             for k in range(2) for lift in LIFTS]
    produce(settings, vib + lifts)
    await wait_for(lambda: len(read(settings, IOT_COMMANDS)) >= 6 and len(signals(settings)) >= 1, 60,
                   "lift commands and the episode signal")
    await first.stop()   # a restart: the next worker restores the changelog

    second = await workers()
    await wait_for(lambda: second.states, 30, "the restarted worker's assignment")
    assert second.restored >= 1
    # more of the same episode, then calm for 6 minutes (二类 clears at 0.75 x after 300 s); each lift's third
    # detection of the day makes its one case
    later = now + timedelta(minutes=3)
    more = [reading("HB-WK-V01", "vibration_mm_s", 2.6, later + timedelta(seconds=2 * i)) for i in range(30)]
    calm = [reading("HB-WK-V01", "vibration_mm_s", 0.5, later + timedelta(minutes=1, seconds=10 * i))
            for i in range(40)]
    third = [reading(lift, "ebike_detected", 1.0, later + timedelta(minutes=2)) for lift in LIFTS[:2]]
    produce(settings, more + third)

    # a second worker joins: partitions move, their state with them
    other = await workers()
    await wait_for(lambda: other.states and second.states, 60, "both workers owning partitions")
    produce(settings, calm + [reading(LIFTS[2], "ebike_detected", 1.0, later + timedelta(minutes=3))])

    def settled() -> bool:
        return len([e for e in read(settings, DEVICE_EPISODES) if e["status"] == "closed"]) >= 1 and \
            len([s for s in signals(settings) if s["category_name"] == "电动车进电梯"]) >= 3
    await wait_for(settled, 90, "the episode to close and each lift's third detection")
    await asyncio.sleep(3)   # let idle partitions close their minutes

    sig = signals(settings)
    episode_signals = [s for s in sig if s["category_name"] == "历史建筑振动超限"]
    assert len(episode_signals) == 1                                   # one signal for the whole episode
    ebike = [s for s in sig if s["category_name"] == "电动车进电梯"]
    assert sorted(s["reporter_id"] for s in ebike) == sorted(LIFTS)    # one case per lift, across restart/rebalance
    episodes = read(settings, DEVICE_EPISODES)
    assert {e["status"] for e in episodes} == {"open", "closed"} and len({e["episode_id"] for e in episodes}) == 1
    closed = next(e for e in episodes if e["status"] == "closed")
    assert closed["peak"] == 2.7 and closed["signal_id"] == episode_signals[0]["signal_id"]
    # every minute of the vibration written, none with more readings than were sent
    rows = {}
    for row in minute_rows(settings):
        key = (row["device_id"], row["metric"], row["minute_ms"])
        assert rows.setdefault(key, row) == row, "a minute written twice with different content"
    sent: dict[tuple[str, str, int], int] = {}
    for r in vib + more + calm:
        ts = int(datetime.fromisoformat(r["ts"]).timestamp() * 1000)
        key = ("HB-WK-V01", "vibration_mm_s", ts - ts % 60_000)
        sent[key] = sent.get(key, 0) + 1
    vib_rows = {k: v["n"] for k, v in rows.items() if k[0] == "HB-WK-V01"}
    assert vib_rows == {k: n for k, n in sent.items() if k in vib_rows}
    assert sum(vib_rows.values()) >= len(vib)   # the minutes before the restart are all there
    assert read(settings, dlq(IOT_READINGS)) == []
    names = TopicNames(settings.topic_prefix)
    changelog = KafkaConsumer(names.name(state_changelog(settings.app_id, IOT_READINGS)),
                              bootstrap_servers=settings.kafka_bootstrap,
                              auto_offset_reset="earliest", consumer_timeout_ms=1500)
    assert any(m.key == b"\x00checkpoint" for m in changelog)
    changelog.close()
