"""The ClickHouse sink: every derived topic → its table, one INSERT per table per batch, commit after insert."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.structs import ConsumerRecord

from streams.bus import records
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import BatchConsumerService
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)


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
        super().__init__(settings, list(records.SINK_TOPICS), metrics, **kw)
        self.store = store
        self.codec = codec

    async def on_shutdown(self) -> None:
        # After the consume loop has stopped (mode runs on_stop, then stops the futures, then this):
        # closing in on_stop raced an insert still in flight ("store is closed", a crash on exit).
        # Services stop in reverse order: the webhook writer, the last other user of the store, is done.
        await asyncio.to_thread(self.store.close)

    def rows_of(self, rec: ConsumerRecord) -> tuple[str, list[dict[str, Any]]]:
        """The table and the (cleaned) rows of one record of a derived topic (streams.bus.records.rows_of)."""
        _, value = self.codec.decode(rec.value)
        return records.rows_of(self.names.logical(rec.topic), value, stored_ms=int(time.time() * 1000))

    async def handle(self, batch: list[ConsumerRecord]) -> None:
        tables: dict[str, list[dict[str, Any]]] = {}
        for rec in batch:
            try:
                table, rows = self.rows_of(rec)
            except (DecodeError, ValueError, KeyError) as exc:
                # Our own topics: a bad record here is a bug; keep it visible, never block the sink.
                log.error("sink: unreadable record %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset, exc)
                self.metrics.dead_letters.labels(topic=self.names.logical(rec.topic), reason="sink_unreadable").inc()
                continue
            if table:
                tables.setdefault(table, []).extend(rows)
        delay = 0.5
        for table, rows in tables.items():
            while True:
                started = time.perf_counter()
                self.last_progress = time.monotonic()   # retrying while ClickHouse is down is alive (/health/)
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
