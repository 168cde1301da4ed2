"""Lean batch consumers beside the Faust agents.

Faust's per-event stream iteration costs ~10x a bare ``getmany`` loop on this hardware, so the
high-volume feeds (IoT readings, inspector GPS tracks) and the ClickHouse sink use plain aiokafka:
fetch a batch, handle it, produce/insert in bulk, commit. Offsets are committed only after the
batch's outputs are durable (Kafka acks, or the ClickHouse insert), so a crash replays, never loses.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.agents.app import reason_label
from streams.agents.emit import Emitter
from streams.codec import DecodeError, SchemaRegistry
from streams.core.ingest import Ingestor, RejectRecord
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.topics import (
    CASE_EVENTS, CASE_INPUTS, CASES, DISPATCHES, FIELD_TRACKS, INTERNAL_SCHEMAS, IOT_READINGS, RAW_SCHEMAS,
    SLA_ALERTS, STORE_ROWS, TRIAGE, TopicNames, dlq,
)

log = logging.getLogger(__name__)

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)


class BatchConsumerService(mode.Service):
    """getmany → handle(batch) → commit, until stopped."""

    group_suffix = "lean"
    max_records = 5000

    def __init__(self, settings: Settings, topics: list[str], metrics: PipelineMetrics, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.physical = [self.names.name(t) for t in topics]
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            *self.physical,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-{self.group_suffix}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=int(self.settings.kafka_session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.kafka_session_timeout_seconds / 10) * 1000),
        )
        await self.consumer.start()
        self.add_future(self._consume())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except Exception as exc:  # consumer closing or broker hiccup
                if self.should_stop:
                    return
                log.warning("%s: fetch failed: %s", self.label, exc)
                await asyncio.sleep(1)
                continue
            records = [r for recs in batches.values() for r in recs]
            if not records:
                continue
            await self.handle(records)
            await self.consumer.commit()

    async def handle(self, records: list[ConsumerRecord]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class LeanIngest(BatchConsumerService):
    """IoT readings and inspector tracks: threshold checks, lift commands within a second, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, ingestor: Ingestor, codec: SchemaRegistry, metrics: PipelineMetrics,
                 emit_result: Any, **kw: Any) -> None:
        super().__init__(settings, list(LEAN_RAW_TOPICS), metrics, **kw)
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

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS})

    async def handle(self, records: list[ConsumerRecord]) -> None:
        out = self.emitter()
        for rec in records:
            logical = self.names.logical(rec.topic)
            self.metrics.event_in("iot" if logical == IOT_READINGS else "field", logical, time.time())
            try:
                _, record = self.codec.decode(rec.value, RAW_SCHEMAS[logical])
                result = self.ingestor.ingest(logical, record, rec.timestamp or int(time.time() * 1000))
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


# ClickHouse sink -------------------------------------------------------------------------

SIGNAL_COLUMNS = (
    "signal_id", "source", "source_kind", "source_id", "ts_ms", "ingest_ms", "category_code", "category_name",
    "confidence", "context", "lat", "lon", "cell", "community", "street", "street_code", "district", "address",
    "reporter_id", "reporter_kind", "handled_on_spot",
)
NULLABLE_COLUMNS = {"lat", "lon"}


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """ClickHouse columns are non-null (CONTRACTS.md): a missing value takes the column default."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None and key not in NULLABLE_COLUMNS:
            continue
        out[key] = int(value) if isinstance(value, bool) else value
    return out


def _text(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode()


class ClickHouseSink(BatchConsumerService):
    """Every derived topic → its ClickHouse table, one INSERT per table per batch.

    While ClickHouse is down the sink retries the same batch and does not commit: Kafka is the
    bounded buffer, the processing agents keep going, and nothing is lost. Tables are
    ReplacingMergeTree on idempotent keys, so a batch replayed after a crash adds no duplicates.
    """

    group_suffix = "clickhouse-sink"
    max_records = 20000

    def __init__(self, settings: Settings, store: Any, codec: SchemaRegistry, metrics: PipelineMetrics,
                 **kw: Any) -> None:
        topics = [CASE_INPUTS, CASES, CASE_EVENTS, DISPATCHES, SLA_ALERTS, TRIAGE, STORE_ROWS]
        topics += [dlq(t) for t in RAW_SCHEMAS] + [dlq(CASE_INPUTS)]
        super().__init__(settings, topics, metrics, **kw)
        self.store = store
        self.codec = codec

    async def on_stop(self) -> None:
        await super().on_stop()
        # services stop in reverse order: the webhook writer, the last other user of the store, is done
        await asyncio.to_thread(self.store.close)

    def rows_of(self, rec: ConsumerRecord) -> tuple[str, list[dict[str, Any]]]:
        logical = self.names.logical(rec.topic)
        if logical.endswith(".dlq"):
            _, dead = self.codec.decode(rec.value)
            return "dead_letters", [{**dead, "original": _text(dead["original"]), "key": _text(dead.get("key"))}]
        _, value = self.codec.decode(rec.value)
        if logical == CASE_INPUTS:
            if value["kind"] != "signal":
                return "", []
            signal = json.loads(value["signal"])
            row = {k: signal.get(k) for k in SIGNAL_COLUMNS}
            row["stored_ms"] = int(time.time() * 1000)
            return "signals", [row]
        if logical == CASES:
            return "cases", [json.loads(value["state"])]
        if logical == CASE_EVENTS:
            return "case_transitions", [json.loads(value["detail"])]
        if logical == DISPATCHES:
            return "dispatches", [{**value, "primary_department": (value["departments"] or [""])[0]}]
        if logical == SLA_ALERTS:
            return "sla_alerts", [value]
        if logical == TRIAGE:
            return "triage", [value]
        if logical == STORE_ROWS:
            return value["table"], json.loads(value["rows"])
        raise DecodeError(f"no table for topic {logical}")

    async def handle(self, records: list[ConsumerRecord]) -> None:
        tables: dict[str, list[dict[str, Any]]] = {}
        for rec in records:
            try:
                table, rows = self.rows_of(rec)
            except (DecodeError, ValueError, KeyError) as exc:
                # Our own topics: a bad record here is a bug; keep it visible, never block the sink.
                log.error("sink: unreadable record %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset, exc)
                self.metrics.dead_letters.labels(topic=self.names.logical(rec.topic), reason="sink_unreadable").inc()
                continue
            if table:
                tables.setdefault(table, []).extend(clean_row(r) for r in rows)
        delay = 0.5
        for table, rows in tables.items():
            while True:
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(self.store.insert, table, rows)
                    self.metrics.store_write_seconds.labels(table=table).observe(time.perf_counter() - started)
                    self.metrics.store_batch_rows.labels(table=table).observe(len(rows))
                    self.metrics.store_rows_written.labels(table=table).inc(len(rows))
                    break
                except Exception as exc:
                    self.metrics.store_write_failures.labels(table=table).inc()
                    log.warning("sink: insert of %d rows into %s failed (%s); retrying in %.1fs",
                                len(rows), table, exc, delay)
                    if self.should_stop:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
