"""The gateway's Kafka producer: acks from every in-sync replica and idempotence, so a record the gateway
answered "accepted" for is durable and a retry inside the producer never writes it twice.

``gateway_producer_config`` builds the aiokafka options from Settings; it stands in for the project's shared
client-config factory (``streams.bus.clients``) and is meant to be replaced by it once that exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streams.bus import clients
from streams.settings import Settings


def gateway_producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options for the gateway: the shared factory's (brokers, SASL, TLS)."""
    return clients.gateway_producer(settings)


class ProduceError(RuntimeError):
    """Kafka did not take a record (broker down, timeout); the caller answers 503 and the client retries."""


class FeedProducer:
    """Sends many records and waits for all their acks; per-record outcomes (None or the error)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(**gateway_producer_config(self.settings))
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def send_many(self, records: list[tuple[str, bytes | None, bytes]]) -> list[Exception | None]:
        """(physical topic, key, value) → per record None (acked) or the exception.

        Records are packed into one batch per partition (aiokafka's ``create_batch``/``send_batch``): a
        per-record ``send`` costs a future and a lock each and caps the gateway far below the broker. The
        partition of a keyed record is the default partitioner's (murmur2, as ``send`` would pick)."""
        if self._producer is None:
            raise ProduceError("the gateway's Kafka producer is not running")
        producer = self._producer
        batches: dict[tuple[str, int], list[tuple[Any, list[int]]]] = {}
        outcome: list[Exception | None] = [None] * len(records)
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        for index, (topic, key, value) in enumerate(records):
            try:
                if topic not in partitions:
                    known = sorted(await producer.partitions_for(topic))
                    available = sorted(producer.client.cluster.available_partitions_for_topic(topic) or known)
                    partitions[topic] = (known, available)
                known, available = partitions[topic]
                partition = self._partitioner(key, known, available)
                open_batches = batches.setdefault((topic, partition), [])
                if not open_batches or open_batches[-1][0].append(key=key, value=value, timestamp=None) is None:
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ProduceError(f"record of {len(value)} bytes does not fit a producer batch")
                    open_batches.append((batch, [index]))
                else:
                    open_batches[-1][1].append(index)
            except Exception as exc:  # unknown topic, metadata timeout, a record too large for a batch
                outcome[index] = exc
        sent: list[tuple[Any, list[int]]] = []
        for (topic, partition), items in batches.items():
            for batch, indexes in items:
                try:
                    sent.append((await producer.send_batch(batch, topic, partition=partition), indexes))
                except Exception as exc:
                    for i in indexes:
                        outcome[i] = exc
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        for (_, indexes), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                for i in indexes:
                    outcome[i] = result if isinstance(result, Exception) else RuntimeError(repr(result))
        return outcome

    async def send_one(self, topic: str, key: bytes | None, value: bytes) -> None:
        [error] = await self.send_many([(topic, key, value)])
        if error is not None:
            raise ProduceError(f"Kafka did not take the record: {error}") from error
