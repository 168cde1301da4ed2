"""The gateway's Kafka producer: acks from every in-sync replica and idempotence, so a record the gateway
answered "accepted" for is durable and a retry inside the producer never writes it twice.

``gateway_producer_config`` builds the aiokafka options from Settings; it stands in for the project's shared
client-config factory (``streams.bus.clients``) and is meant to be replaced by it once that exists.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.settings import Settings


def gateway_producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options for the gateway (swap for the shared factory in streams.bus.clients)."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 512 * 1024,
        "request_timeout_ms": int(settings.kafka_request_timeout_seconds * 1000),
        "client_id": f"{settings.app_id}-gateway",
    }


class ProduceError(RuntimeError):
    """Kafka did not take a record (broker down, timeout); the caller answers 503 and the client retries."""


class FeedProducer:
    """Sends many records and waits for all their acks; per-record outcomes (None or the error)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

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
        """(physical topic, key, value) → per record None (acked) or the exception."""
        if self._producer is None:
            raise ProduceError("the gateway's Kafka producer is not running")
        futures: list[Any] = []
        for topic, key, value in records:
            try:
                futures.append(await self._producer.send(topic, value, key=key))
            except Exception as exc:  # buffer full, unknown topic, closed producer
                futures.append(exc)
        pending = [f for f in futures if not isinstance(f, Exception)]
        results = await asyncio.gather(*pending, return_exceptions=True)
        out: list[Exception | None] = []
        it = iter(results)
        for f in futures:
            if isinstance(f, Exception):
                out.append(f)
            else:
                result = next(it)
                out.append(result if isinstance(result, BaseException) else None)
        return out

    async def send_one(self, topic: str, key: bytes | None, value: bytes) -> None:
        [error] = await self.send_many([(topic, key, value)])
        if error is not None:
            raise ProduceError(f"Kafka did not take the record: {error}") from error
