"""The ClickHouse sink: every derived topic → its table, one INSERT per table per batch, commit after insert."""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from aiokafka.structs import ConsumerRecord

from streams.bus import records
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import BatchConsumerService, Unavailable
from streams.bus.topics import CASE_INPUTS
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.sinks.insert import Refused, SinkRow, StoreUnavailable, write_refused, write_table

log = logging.getLogger(__name__)


class ClickHouseSink(BatchConsumerService):
    """Every derived topic → its ClickHouse table, one INSERT per table per batch.

    While ClickHouse is down the sink pauses its partitions, keeps polling (it stays in its group)
    and retries the same batch, committing only after the insert: Kafka is the bounded buffer, the
    processing agents keep going, and nothing is lost. A row the server refuses goes to
    ``sink_dead_letters`` with the reason and the rest of its batch is written. Tables are
    ReplacingMergeTree on idempotent keys, so a batch replayed after a crash adds no duplicates.
    """

    group_suffix = "clickhouse-sink"
    max_records = 20000

    def __init__(self, settings: Settings, store: Any, codec: SchemaRegistry, metrics: PipelineMetrics,
                 **kw: Any) -> None:
        super().__init__(settings, list(records.SINK_TOPICS), metrics, **kw)
        # one INSERT per table per batch: a batch gathers for up to store_flush_seconds (each INSERT makes a
        # part the server merges later; a few large ones cost far less than many small ones)
        self.linger_seconds = settings.store_flush_seconds
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

    async def prepare(self, batch: list[ConsumerRecord]) -> SinkBatch:
        """Records → rows by table. A record that cannot be read is set aside (sink_dead_letters) with the
        reason: our own topics, so it is a bug or a stranger's write, and it must not block the sink. An
        unreadable case.inputs record is the lifecycle's to dead-letter (it owns that topic): skipped here."""
        prepared = SinkBatch(int(time.time() * 1000))
        for rec in batch:
            logical = self.names.logical(rec.topic)
            try:
                table, rows = self.rows_of(rec)
            except Exception as exc:
                if logical == CASE_INPUTS:
                    continue
                log.error("sink: unreadable record %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset, exc)
                self.metrics.dead_letters.labels(topic=logical, reason="sink_unreadable").inc()
                position = SinkRow(logical, rec.partition, rec.offset, 0, {"original": _text(rec.value)})
                reason = str(exc) if isinstance(exc, DecodeError) else f"unreadable: {exc!r}"
                prepared.refused.append(Refused(position, "", reason))
                continue
            if table:
                prepared.tables.setdefault(table, []).extend(
                    SinkRow(logical, rec.partition, rec.offset, i, row) for i, row in enumerate(rows))
        return prepared

    async def deliver(self, prepared: SinkBatch) -> None:
        """Each table in one INSERT (bisected around rows the server refuses), then the refused rows into
        sink_dead_letters; raises Unavailable while ClickHouse is down (the consumer pauses, keeps polling
        and calls again with what is left)."""
        try:
            for table in list(prepared.tables):
                rows = prepared.tables[table]
                started = time.perf_counter()
                refused = await asyncio.to_thread(write_table, self.store, table, rows)
                self.metrics.store_write_seconds.labels(table=table).observe(time.perf_counter() - started)
                self.metrics.store_batch_rows.labels(table=table).observe(len(rows))
                self.metrics.store_rows_written.labels(table=table).inc(len(rows) - len(refused))
                for item in refused:
                    log.error("sink: a %s row from %s[%s]@%s set aside: %s", table, item.row.topic,
                              item.row.partition, item.row.offset, item.reason)
                    self.metrics.dead_letters.labels(topic=item.row.topic, reason="sink_refused").inc()
                prepared.refused.extend(refused)
                del prepared.tables[table]   # written: a retry after an outage goes on with the next table
            await asyncio.to_thread(write_refused, self.store, prepared.refused, prepared.ts_ms)
            prepared.refused = []
        except StoreUnavailable as exc:
            self.metrics.store_write_failures.labels(table="*").inc()
            raise Unavailable(str(exc)) from exc
        crash_point("sink.inserted")


class SinkBatch:
    """A fetched batch as rows by table, and the rows and records set aside; shrinks as tables are written."""

    def __init__(self, ts_ms: int) -> None:
        self.tables: dict[str, list[SinkRow]] = {}
        self.refused: list[Refused] = []
        self.ts_ms = ts_ms


def _text(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode()
