"""The lean IoT/GPS ingest: a batch consumer beside the Faust agents (see streams.bus.consumer)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.agents.app import reason_label
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import BatchConsumerService, Unavailable
from streams.bus.emit import Emitter, InputRecord, SendFailed
from streams.bus.rules import InputRules
from streams.bus.topics import FIELD_TRACKS, INTERNAL_SCHEMAS, IOT_READINGS, RAW_SCHEMAS
from streams.core.ingest import Ingestor, RejectRecord
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)


class LeanIngest(BatchConsumerService):
    """IoT readings and inspector tracks: threshold checks, lift commands within a second, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, ingestor: Ingestor, codec: SchemaRegistry, metrics: PipelineMetrics,
                 emit_result: Any, **kw: Any) -> None:
        super().__init__(settings, list(LEAN_RAW_TOPICS), metrics, **kw)
        self.ingestor = ingestor
        self.codec = codec
        self.emit_result = emit_result  # Pipeline.emit_ingest_result
        self.rules = InputRules.from_settings(settings)
        self.producer: AIOKafkaProducer | None = None
        self.renew_needed = False

    def new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=2, acks="all",
                                enable_idempotence=True,
                                max_request_size=self.settings.kafka_max_message_bytes + 64 * 1024)

    async def on_start(self) -> None:
        self.producer = self.new_producer()
        await self.producer.start()
        await super().on_start()

    async def renew_producer(self) -> None:
        """A new producer in place of one that cannot send any more; Unavailable while the broker is away."""
        if self.producer is not None:
            try:
                await asyncio.wait_for(self.producer.stop(), timeout=10)
            except Exception as exc:
                log.warning("lean ingest: the replaced producer did not stop cleanly: %r", exc)
        producer = self.new_producer()
        try:
            await producer.start()
        except Exception as exc:
            raise Unavailable(f"cannot start a new producer: {exc}") from exc
        self.producer, self.renew_needed = producer, False

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            assert self.producer is not None  # the current one: it may have been renewed
            return await self.producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS},
                       self.settings.kafka_max_message_bytes)

    async def prepare(self, records: list[ConsumerRecord]) -> Emitter:
        out = self.emitter()
        for rec in records:
            logical = self.names.logical(rec.topic)
            self.metrics.event_in("iot" if logical == IOT_READINGS else "field", logical, time.time())
            out.begin(InputRecord(logical, rec.partition, rec.offset, rec.timestamp or 0, rec.value, rec.key))
            try:
                _, record = self.codec.decode(rec.value, RAW_SCHEMAS[logical], self.rules, rec.timestamp)
                result = self.ingestor.ingest(RAW_SCHEMAS[logical], record, rec.timestamp or int(time.time() * 1000))
                self.emit_result(out, result)
            except Exception as exc:  # DecodeError/RejectRecord, or a bug: park the record, never stop the feed
                known = isinstance(exc, (DecodeError, RejectRecord))
                if not known:
                    log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                reason = str(exc) if known else f"internal error: {exc!r}"
                self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
                out.park(reason)
        out.end()
        return out

    async def deliver(self, out: Emitter) -> None:
        if self.renew_needed:
            await self.renew_producer()
        try:
            await out.flush()
        except SendFailed as exc:
            if exc.broken:  # the idempotence state is lost in the outage: only a new producer can send
                log.warning("lean ingest: replacing the producer (%s)", exc.error)
                self.renew_needed = True
            raise Unavailable(str(exc)) from exc
        crash_point("lean.outputs_sent")
