"""The lean batch consumer on the real broker: with a linger, records that arrive in bursts shortly after
one another form one batch (one ClickHouse INSERT per table instead of one per burst); without it, each
poll's records are a batch of their own."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.bus.consumer import BatchConsumerService
from streams.bus.topics import TopicNames
from streams.local.kafka import LocalKafka
from streams.metrics import PipelineMetrics
from streams.settings import Settings

pytestmark = pytest.mark.kafka


class Recorder(BatchConsumerService):
    group_suffix = "linger-test"

    def __init__(self, settings: Settings, topic: str, linger: float) -> None:
        super().__init__(settings, [topic], PipelineMetrics())
        self.linger_seconds = linger
        self.batches: list[int] = []

    async def prepare(self, records: list[Any]) -> Any:
        self.batches.append(len(records))
        return None

    async def deliver(self, outputs: Any) -> None:
        return None


@pytest.mark.parametrize("linger", [0.0, 2.0])
async def test_a_linger_gathers_bursts_into_one_batch(kafka: LocalKafka, topic_prefix: str, linger: float) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, app_id=f"citygrid-{topic_prefix}")
    names = TopicNames(topic_prefix)
    kafka.create_topics([names.name("bursts")], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=0)
    await producer.start()
    consumer = Recorder(settings, "bursts", linger)
    await consumer.start()
    try:
        for _ in range(100):  # joined its group: the bursts arrive while it polls
            if consumer.consumer is not None and consumer.consumer.assignment():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        for burst in range(3):
            await asyncio.gather(*[await producer.send(names.name("bursts"), f"{burst}-{i}".encode())
                                   for i in range(10)])
            await asyncio.sleep(0.4)
        for _ in range(50):
            if sum(consumer.batches) >= 30:
                break
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await producer.stop()
    assert sum(consumer.batches) == 30, consumer.batches
    if linger:
        assert consumer.batches == [30]
    else:
        assert len(consumer.batches) >= 3, consumer.batches   # a batch per burst at least
