"""The lean batch consumer: getmany → prepare(batch) → deliver → commit.

Faust's per-event stream iteration costs ~10x a bare ``getmany`` loop on this hardware, so the
high-volume feeds (IoT readings, inspector GPS tracks) and the ClickHouse sink use plain aiokafka:
fetch a batch, turn it into outputs, produce/insert them in bulk, commit. Offsets are committed only
after the batch's outputs are durable (Kafka acks, or the ClickHouse insert), so a crash replays,
never loses.

Two kinds of failure are kept apart (docs/reliability.md):

* a record's own fault is handled inside ``prepare`` (its dead letter is one of the outputs);
* an outage (``deliver`` raises :class:`Unavailable`: Kafka or ClickHouse down) is not the
  records' fault: the consumer pauses its partitions, keeps the prepared batch, and **keeps
  polling** (paused, so nothing new arrives) while it retries ``deliver`` with backoff. It never
  exceeds ``max.poll.interval`` and so never loses its group; when the output is back it
  delivers, commits and resumes. A rebalance while paused drops the batch (it was not committed:
  whoever owns the partitions next reads it again).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.bus import clients
from streams.bus.records import Inbound
from streams.bus.topics import TopicNames
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 15.0


def inbound(record: ConsumerRecord) -> Inbound:
    """An aiokafka record as the adapters read it (aiokafka timestamps are epoch milliseconds)."""
    return Inbound(record.topic, record.partition, record.offset, record.timestamp or None, record.key,
                   record.value)


class Unavailable(RuntimeError):
    """An output (Kafka, ClickHouse) is unreachable: retry the same delivery later."""


class _DropOnRevoke(ConsumerRebalanceListener):
    def __init__(self, service: BatchConsumerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.service.prepared is not None and revoked:
            log.warning("%s: partitions revoked while a batch waited for its output; it will be read again",
                        self.service.label)
            self.service.prepared = None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class BatchConsumerService(mode.Service):
    """getmany → prepare(batch) → deliver(prepared) → commit, until stopped."""

    group_suffix = "lean"
    max_records = 5000
    # After the first records of a batch, keep fetching this long (or until max_records) before preparing it:
    # fewer, larger outputs where each costs much whatever its size (a ClickHouse INSERT makes a part).
    linger_seconds = 0.0

    def __init__(self, settings: Settings, topics: list[str], metrics: PipelineMetrics, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.physical = [self.names.name(t) for t in topics]
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None
        self.prepared: tuple[list[ConsumerRecord], Any] | None = None  # a batch waiting for its output
        self.outage_since: float | None = None
        self.last_progress: float | None = None   # monotonic: last poll or retry (/health/ reads it)

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(**clients.batch_consumer(
            self.settings, f"{self.settings.app_id}-{self.group_suffix}", self.max_records))
        self.consumer.subscribe(self.physical, listener=_DropOnRevoke(self))
        await self.consumer.start()
        self.add_future(self._consume())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        delay = BACKOFF_INITIAL
        while not self.should_stop:
            self.last_progress = time.monotonic()
            if self.prepared is None:
                records = await self._fetch(200)
                if not records:
                    continue
                if self.linger_seconds > 0:
                    records += await self._gather(self.linger_seconds, self.max_records - len(records))
                self.prepared = (records, await self.prepare(records))
            records, outputs = self.prepared
            try:
                await self.deliver(outputs)
            except Unavailable as exc:
                if self.should_stop:
                    return
                self._enter_outage(exc, delay)
                # stay in the group: poll (paused: nothing new arrives) for the length of the backoff
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self.should_stop and self.prepared is not None:
                    self.last_progress = time.monotonic()
                    await self._fetch(int(min(1.0, max(0.05, deadline - time.monotonic())) * 1000))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            await self._commit(records)
            self.prepared = None
            delay = BACKOFF_INITIAL
            self._leave_outage()

    async def _gather(self, seconds: float, room: int) -> list[ConsumerRecord]:
        """More records for the batch just fetched, for up to ``seconds`` or until ``room`` is filled."""
        gathered: list[ConsumerRecord] = []
        deadline = time.monotonic() + seconds
        while len(gathered) < room and not self.should_stop:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            gathered += await self._fetch(max(1, int(left * 1000)), room - len(gathered))
        return gathered

    async def _fetch(self, timeout_ms: int, max_records: int | None = None) -> list[ConsumerRecord]:
        assert self.consumer is not None
        try:
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records or self.max_records)
        except Exception as exc:  # broker away, consumer closing: the loop goes on
            if not self.should_stop:
                log.warning("%s: fetch failed: %s", self.label, exc)
                await asyncio.sleep(1)
            return []
        return [r for recs in batches.values() for r in recs]

    async def _commit(self, records: list[ConsumerRecord]) -> None:
        """Commit exactly the delivered batch (its last offset + 1 per partition)."""
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        assigned = self.consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        for attempt in range(5):
            try:
                await self.consumer.commit(offsets)
                return
            except Exception as exc:  # a rebalance (the new owner re-reads: idempotent) or the broker away
                if self.should_stop:
                    return
                log.warning("%s: commit failed (%s); attempt %d", self.label, exc, attempt + 1)
                await asyncio.sleep(min(2 ** attempt, 10))
        log.warning("%s: batch delivered but not committed; it will be delivered again (idempotent)", self.label)

    def _enter_outage(self, exc: Exception, delay: float) -> None:
        assert self.consumer is not None
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning("%s: output unavailable (%s): pausing partitions, retrying", self.label, exc)
        else:
            log.info("%s: output still unavailable after %.0fs (%s); next try in %.1fs", self.label,
                     time.monotonic() - self.outage_since, exc, delay)
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)

    def _leave_outage(self) -> None:
        assert self.consumer is not None
        if self.outage_since is not None:
            log.warning("%s: output back after %.0fs; resuming", self.label, time.monotonic() - self.outage_since)
            self.outage_since = None
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    async def prepare(self, records: list[ConsumerRecord]) -> Any:  # pragma: no cover - abstract
        """Turn a fetched batch into its outputs (record faults become dead letters here)."""
        raise NotImplementedError

    async def deliver(self, outputs: Any) -> None:  # pragma: no cover - abstract
        """Make the outputs durable; raise Unavailable to be called again later with the same outputs."""
        raise NotImplementedError
