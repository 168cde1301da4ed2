"""The lean IoT/GPS ingest: a batch consumer beside the Faust agents (see streams.bus.consumer) that
hands its batches to the same ingest adapter as the Faust ingest agent."""
from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.agents.ingest import IngestAdapter
from streams.bus import clients
from streams.bus.codec import SchemaRegistry
from streams.bus.consumer import BatchConsumerService, inbound
from streams.bus.emit import Emitter
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import FIELD_TRACKS, INTERNAL_SCHEMAS, IOT_READINGS, RAW_SCHEMAS
from streams.metrics import PipelineMetrics
from streams.settings import Settings

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)


class LeanIngest(BatchConsumerService):
    """IoT readings and inspector tracks: threshold checks, lift commands within a second, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, adapter: IngestAdapter, codec: SchemaRegistry, metrics: PipelineMetrics,
                 sealer: DeadLetterSealer | None = None, **kw: Any) -> None:
        super().__init__(settings, list(LEAN_RAW_TOPICS), metrics, **kw)
        self.adapter = adapter
        self.sealer = sealer  # the pipeline's: dead-letter originals are sealed
        self.codec = codec
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = AIOKafkaProducer(**clients.lean_producer(self.settings))
        await self.producer.start()
        await super().on_start()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    def emitter(self) -> Emitter:
        producer = self.producer
        assert producer is not None

        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            return await producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}, sealer=self.sealer)

    async def handle(self, records: list[ConsumerRecord]) -> None:
        out = self.emitter()
        await self.process(records, out)
        await out.flush()

    async def process(self, records: list[ConsumerRecord], out: Emitter) -> None:
        """One fetched batch through the ingest adapter; its outputs queued on ``out``."""
        await self.adapter.handle([inbound(rec) for rec in records], out)
