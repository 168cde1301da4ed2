"""The batched sender on the real broker: a keyed record lands on the partition ``AIOKafkaProducer.send``
would have chosen (Kafka's murmur2), one partition's records keep their order across many batches, an
explicit partition is kept, and what cannot be sent comes back as that record's error, not a crash."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bus.codec import registry
from streams.bus.emit import Emitter
from streams.bus.produce import PartitionedSender
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import INTERNAL_SCHEMAS, RAW_SCHEMAS, TopicNames
from streams.local.kafka import LocalKafka

pytestmark = pytest.mark.kafka
PARTITIONS = 6


@pytest.fixture
async def producer(kafka: LocalKafka) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True,
                               linger_ms=2)
    await started.start()
    yield started
    await started.stop()


async def read_all(kafka: LocalKafka, topic: str, expected: int) -> dict[int, list[tuple[bytes | None, bytes]]]:
    """Every record of ``topic`` by partition, in log order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        seen: dict[int, list[tuple[bytes | None, bytes]]] = {p: [] for p in range(PARTITIONS)}
        for _ in range(100):
            for tp, recs in (await consumer.getmany(timeout_ms=300)).items():
                seen[tp.partition].extend((rec.key, rec.value) for rec in recs)
            if sum(len(v) for v in seen.values()) >= expected:
                break
        return seen
    finally:
        await consumer.stop()


async def test_keyed_records_land_where_send_puts_them_in_order(kafka: LocalKafka, topic_prefix: str,
                                                                producer: AIOKafkaProducer) -> None:
    ours, theirs = f"{topic_prefix}.batched", f"{topic_prefix}.single"
    kafka.create_topics([ours, theirs], partitions=PARTITIONS)

    async def started() -> AIOKafkaProducer:
        return producer

    sender = PartitionedSender(started)
    keys = [f"3101040{n:05d}-case-{n % 37}".encode() for n in range(400)]
    # ~6 KiB values: a partition's records take several batches (max_batch_size 16 KiB)
    records = [(ours, key, b"%05d" % n + b"v" * 6000, None) for n, key in enumerate(keys)]
    records += [(ours, b"pinned", b"to partition 5", 5)]
    assert await sender(records) == [None] * len(records)
    futures = [await producer.send(theirs, value, key=key) for _, key, value, _ in records[:-1]]
    await asyncio.gather(*futures)

    batched, single = await read_all(kafka, ours, len(records)), await read_all(kafka, theirs, len(records) - 1)
    where_send_put = {key: p for p, recs in single.items() for key, _ in recs}
    assert {key: p for p, recs in batched.items() for key, value in recs if key != b"pinned"} == where_send_put
    assert (b"pinned", b"to partition 5") in batched[5]
    for recs in batched.values():   # one partition's records in the order they were staged
        numbers = [int(value[:5]) for key, value in recs if key != b"pinned"]
        assert numbers == sorted(numbers)
    assert sum(len(recs) for recs in batched.values()) == len(records)


async def test_what_cannot_be_sent_is_that_records_error(kafka: LocalKafka, topic_prefix: str,
                                                         producer: AIOKafkaProducer) -> None:
    topic = f"{topic_prefix}.errors"
    kafka.create_topics([topic], partitions=PARTITIONS)

    async def started() -> AIOKafkaProducer:
        return producer

    results = await PartitionedSender(started)([(topic, b"k", b"fine", None), (topic, b"k", b"no such", 99),
                                                (topic, None, b"no key: any partition", None)])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError) and "no partition 99" in str(results[1])

    async def away() -> AIOKafkaProducer:
        raise ConnectionError("broker away")

    assert [type(r) for r in await PartitionedSender(away)([(topic, b"k", b"v", None)])] == [ConnectionError]


async def test_the_emitter_flushes_through_the_sender_and_keeps_what_failed(kafka: LocalKafka, topic_prefix: str,
                                                                           producer: AIOKafkaProducer) -> None:
    names = TopicNames(topic_prefix)
    kafka.create_topics([names.name("triage.manual")], partitions=PARTITIONS)

    async def started() -> AIOKafkaProducer:
        return producer

    async def unused(*_: object) -> object:
        raise AssertionError("the per-record send is not used when send_many is given")

    out = Emitter(unused, registry(), names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS},
                  sealer=DeadLetterSealer.ephemeral(), send_many=PartitionedSender(started))
    for n in range(50):
        out.record("triage.manual", {"triage_id": f"t{n}", "topic": "hotline.calls", "reason": "r", "ts_ms": n,
                                     "record": "{}", "best_category": None, "confidence": None}, key=f"t{n}")
    assert await out.flush() == 50
    assert len(out) == 0
    seen = await read_all(kafka, names.name("triage.manual"), 50)
    assert sum(len(recs) for recs in seen.values()) == 50
