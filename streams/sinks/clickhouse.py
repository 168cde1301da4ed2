"""The ClickHouse sink: every derived topic → its table, one INSERT per table per batch, commit after insert."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

from aiokafka.structs import ConsumerRecord

from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import BatchConsumerService
from streams.bus.topics import (
    CASE_EVENTS, CASE_INPUTS, CASES, DEVICE_EPISODES, DISPATCHES, RAW_SCHEMAS, SLA_ALERTS, STORE_ROWS, TRIAGE, dlq,
)
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)


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
        topics = [CASE_INPUTS, CASES, CASE_EVENTS, DISPATCHES, SLA_ALERTS, TRIAGE, STORE_ROWS, DEVICE_EPISODES]
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
        if logical == DEVICE_EPISODES:
            return "device_episodes", [value]
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
