"""The lean IoT/GPS ingest: a batch consumer beside the Faust agents (see streams.bus.consumer)."""
from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.agents.app import reason_label
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import BatchConsumerService
from streams.bus.emit import Emitter
from streams.bus.topics import FIELD_TRACKS, INTERNAL_SCHEMAS, IOT_READINGS, RAW_SCHEMAS
from streams.core.ingest import Ingestor, RejectRecord
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)


class LeanIngest(BatchConsumerService):
    """IoT readings and inspector tracks: threshold checks, lift commands within a second, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, ingestor: Ingestor, codec: SchemaRegistry, metrics: PipelineMetrics,
                 emit_result: Any, sealer: Any = None, **kw: Any) -> None:
        super().__init__(settings, list(LEAN_RAW_TOPICS), metrics, **kw)
        self.sealer = sealer  # DeadLetterSealer of the pipeline (dead-letter originals are sealed)
        self.ingestor = ingestor
        self.codec = codec
        self.emit_result = emit_result  # Pipeline.emit_ingest_result
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=2, acks="all")
        await self.producer.start()
        await super().on_start()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    def emitter(self) -> Emitter:
        producer = self.producer
        assert producer is not None

        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None):
            return await producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}, sealer=self.sealer)

    async def handle(self, records: list[ConsumerRecord]) -> None:
        out = self.emitter()
        for rec in records:
            logical = self.names.logical(rec.topic)
            self.metrics.event_in("iot" if logical == IOT_READINGS else "field", logical, time.time())
            try:
                _, record = self.codec.decode(rec.value, RAW_SCHEMAS[logical])
                result = self.ingestor.ingest(RAW_SCHEMAS[logical], record, rec.timestamp or int(time.time() * 1000))
            except Exception as exc:  # DecodeError/RejectRecord, or a bug: park the record, never stop the feed
                known = isinstance(exc, (DecodeError, RejectRecord))
                if not known:
                    log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                reason = str(exc) if known else f"internal error: {exc!r}"
                self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
                out.dead_letter(logical, rec.partition, rec.offset, reason, int(time.time() * 1000), rec.value, rec.key)
                continue
            self.emit_result(out, result)
        await out.flush()
