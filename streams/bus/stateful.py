"""A lean batch consumer with keyed, changelog-backed state per input partition.

Why not Faust tables: the IoT and GPS feeds are read by lean aiokafka batch consumers because Faust's
per-event stream costs ~10x a ``getmany`` loop here; Faust tables belong to Faust agents, and their
at-least-once changelog would re-apply a replayed record on top of state that already holds it (a
reading counted twice in a minute, a closed episode reopened). So this consumer keeps its own, smaller
contract with the core's partition state (``PartitionState``; streams.core.devices.processor is one):

* the input is keyed (iot.readings by device id), so all the records of a key meet on one partition and
  the partition's state holds everything about them; one state object per assigned partition;
* the state lives in a **compacted changelog topic** with the input's partition count: partition ``p`` of
  the changelog holds the state of input partition ``p`` — one record per changed key per batch (JSON;
  ``None``: a tombstone) and one **checkpoint** record (``CHECKPOINT_KEY``) saying how far the state goes;
* every batch ends in this order: outputs sent and acknowledged → changed states and the checkpoint sent
  and acknowledged → input offsets committed. A crash anywhere in between leaves a changelog that is never
  behind the outputs; the state itself tells which records it already holds (the core's ``upto``), so a
  record processed again changes nothing and produces only records it produced before (same ids);
* on **assignment** (start, restart, rebalance) the changelog partition is read back, the state restored,
  and the input re-read from where the checkpoint says (the open one-minute buckets are rebuilt from the
  input rather than written to the changelog on every reading); on **revocation** the partition's state is
  dropped after the batch in flight has finished (one lock around batch and rebalance).

Several workers share the partitions through the consumer group; each partition's state moves with it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams.bus import clients
from streams.bus.codec import SchemaRegistry
from streams.bus.delivery import deliver_until_acked
from streams.bus.emit import Emitter
from streams.bus.produce import PartitionedSender
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import INTERNAL_SCHEMAS, RAW_SCHEMAS, TopicNames
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

CHECKPOINT_KEY = b"\x00checkpoint"


class PartitionState(Protocol):
    """What the consumer needs from the core's state of one input partition."""

    def restore(self, checkpoint: Any, states: Mapping[str, Any]) -> int | None: ...
    def take_dirty(self) -> Mapping[str, Any]: ...
    def checkpoint(self) -> Any: ...
    def checkpointed(self, upto: int) -> None: ...


class StateRestoreError(RuntimeError):
    """The changelog cannot hold this input's state (e.g. fewer partitions than the input)."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: StatefulBatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.assigned(list(assigned))


class StatefulBatchConsumer(mode.Service):
    """getmany → process(records by partition) → outputs acked → state acked → commit."""

    sealer: DeadLetterSealer | None = None  # seals dead-letter originals (set by the owner that has the key)

    group_suffix = "stateful"
    max_records = 5000
    idle_seconds = 5.0           # a partition without records this long gets ``on_idle``
    outputs_point = "lean.outputs_sent"   # the crash point (streams.faults) between outputs and state

    def __init__(self, settings: Settings, topics: list[str], state_topics: Mapping[str, str], codec: SchemaRegistry,
                 metrics: PipelineMetrics, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.topics = list(topics)
        self.physical = [self.names.name(t) for t in topics]
        self.state_topics = dict(state_topics)      # logical input topic -> logical changelog topic
        self.codec = codec
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None
        self.last_progress: float | None = None   # monotonic: last poll (/health/ reads it)
        self.producer: AIOKafkaProducer | None = None
        self.sender = PartitionedSender(self.started_producer)   # every emitter's records, batched per partition
        self.states: dict[TopicPartition, PartitionState] = {}
        self.last_seen: dict[TopicPartition, float] = {}
        self.lock = asyncio.Lock()
        self.restored = 0            # partitions restored from a changelog (metric for tests and logs)
        self._checkpoints: dict[TopicPartition, int] = {}   # partition -> upto of the checkpoint last written
        # Offsets the state expects next, and (after a seek back) where records fetched before the seek begin:
        # aiokafka may hand over records prefetched from the committed offset after we sought elsewhere.
        self.expected: dict[TopicPartition, int] = {}
        self.stale_from: dict[TopicPartition, int] = {}

    # ------------------------------------------------------------ to implement
    def new_state(self, topic: str, partition: int) -> PartitionState:  # pragma: no cover - abstract
        raise NotImplementedError

    async def process(self, records: list[ConsumerRecord], out: Emitter) -> None:
        """One batch of records (of partitions whose state is in ``self.states``, in partition order)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def on_idle(self, tp: TopicPartition, state: PartitionState, idle_ms: int, out: Emitter) -> bool:
        """A stateful partition without records for ``idle_ms`` (at least ``idle_seconds``); True when its
        state changed (a checkpoint is written)."""
        return False

    # ------------------------------------------------------------ lifecycle
    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            return await (await self.started_producer()).send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}, sealer=self.sealer,
                       max_message_bytes=self.settings.kafka_max_message_bytes, send_many=self.sender)

    async def started_producer(self) -> AIOKafkaProducer:
        if self.producer is None:   # replaced after an outage and not started yet
            self.producer = await self._new_producer()
        return self.producer

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**clients.lean_producer(self.settings))
        try:
            await producer.start()
        except BaseException:   # broker away: the next send tries again
            await producer.stop()
            raise
        return producer

    async def renew_producer(self) -> None:
        """Drop a producer whose idempotence state an outage broke; the next send starts a new one."""
        old, self.producer = self.producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), timeout=10)
            except Exception as exc:
                log.warning("%s: the replaced producer did not stop cleanly: %r", self.label, exc)

    async def deliver(self, out: Emitter) -> None:
        """Until acknowledged: while the broker is away the batch waits here, under the lock (a rebalance
        waits for it; past max.poll.interval the group moves on, and the commit after the outage fails
        harmlessly: the next owner restores the changelog and skips what it holds)."""
        await deliver_until_acked(out, self.label, lambda: self.should_stop, self.renew_producer)

    async def on_start(self) -> None:
        s = self.settings
        self.producer = await self._new_producer()
        self.consumer = AIOKafkaConsumer(**clients.batch_consumer(s, f"{s.app_id}-{self.group_suffix}",
                                                                  self.max_records))
        await self.consumer.start()
        await self._check_changelogs()
        self.consumer.subscribe([self.names.name(t) for t in self.topics], listener=_Listener(self))
        self.add_future(self._consume())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _check_changelogs(self) -> None:
        """A changelog with fewer partitions than its input could not hold every partition's state."""
        assert self.consumer is not None
        for topic, changelog in self.state_topics.items():
            inputs = await self._partitions(self.names.name(topic))
            logs = await self._partitions(self.names.name(changelog))
            if inputs and len(logs) < len(inputs):
                raise StateRestoreError(f"changelog {self.names.name(changelog)} has {len(logs)} partitions but "
                                        f"{self.names.name(topic)} has {len(inputs)}: create it with as many")

    async def _partitions(self, topic: str) -> set[int]:
        assert self.consumer is not None
        for _ in range(50):
            parts = self.consumer.partitions_for_topic(topic)
            if parts:
                return set(parts)
            await self.consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
            await asyncio.sleep(0.1)
        return set()

    # ------------------------------------------------------------ rebalance
    async def revoked(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:   # the batch in flight finishes (and commits) first
            for tp in partitions:
                self.states.pop(tp, None)
                self.last_seen.pop(tp, None)
                self.expected.pop(tp, None)
                self.stale_from.pop(tp, None)

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:
            for tp in partitions:
                logical = self.names.logical(tp.topic)
                if logical not in self.state_topics:
                    continue
                state = self.new_state(logical, tp.partition)
                checkpoint, states = await self.read_changelog(self.names.name(self.state_topics[logical]),
                                                               tp.partition)
                start = state.restore(checkpoint, states)
                if start is not None:
                    assert self.consumer is not None
                    committed = await self.consumer.committed(tp)
                    self.consumer.seek(tp, start)
                    self.expected[tp] = start
                    if committed is not None and committed > start:
                        self.stale_from[tp] = committed
                self.states[tp] = state
                self.last_seen[tp] = time.monotonic()
                self.restored += 1
                log.info("%s: %s[%d] restored %d keys, checkpoint %s, reading from %s", self.label, logical,
                         tp.partition, len(states), "yes" if checkpoint is not None else "none",
                         start if start is not None else "the committed offset")

    async def read_changelog(self, topic: str, partition: int) -> tuple[Any, dict[str, Any]]:
        """The latest checkpoint and key states of one changelog partition (tombstones removed)."""
        tp = TopicPartition(topic, partition)
        reader = AIOKafkaConsumer(**clients.topic_reader(self.settings), fetch_max_bytes=32 * 1024 * 1024,
                                  max_poll_records=20000)
        await reader.start()
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]
            checkpoint: Any = None
            states: dict[str, Any] = {}
            while await reader.position(tp) < end:
                for records in (await reader.getmany(tp, timeout_ms=1000)).values():
                    for rec in records:
                        value = orjson.loads(rec.value) if rec.value is not None else None
                        if rec.key == CHECKPOINT_KEY:
                            checkpoint = value
                        elif rec.key is not None:
                            states[rec.key.decode("utf-8")] = value
            return checkpoint, {k: v for k, v in states.items() if v is not None}
        finally:
            await reader.stop()

    # ------------------------------------------------------------ the loop
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            self.last_progress = time.monotonic()
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except Exception as exc:  # consumer closing or broker hiccup
                if self.should_stop:
                    return
                log.warning("%s: fetch failed: %s", self.label, exc)
                await asyncio.sleep(1)
                continue
            async with self.lock:
                await self.run_batch(batches)

    async def run_batch(self, batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """One batch, under the lock: records of partitions no longer ours are left for their new owner."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        batches = {tp: recs for tp, recs in batches.items() if recs and tp in owned
                   and (tp in self.states or self.names.logical(tp.topic) not in self.state_topics)}
        batches = {tp: recs for tp, recs in ((tp, self._in_order(tp, recs)) for tp, recs in batches.items()) if recs}
        now = time.monotonic()
        out = self.emitter()
        touched: set[TopicPartition] = set()
        if batches:
            for tp in batches:
                self.last_seen[tp] = now
            await self.process([rec for recs in batches.values() for rec in recs], out)
            touched = {tp for tp in batches if tp in self.states}
        for tp, state in self.states.items():
            idle = now - self.last_seen.get(tp, now)
            if tp not in batches and idle >= self.idle_seconds:
                if self.on_idle(tp, state, int(idle * 1000), out):
                    touched.add(tp)
                self.last_seen[tp] = now
        if not batches and not touched:
            return
        await self.deliver(out)                    # 1. outputs acknowledged
        crash_point(self.outputs_point)
        await self._write_states(touched)          # 2. state and checkpoints acknowledged
        if batches:                                # 3. the input committed
            offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "") for tp, recs in batches.items()}
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # a rebalance took the partition meanwhile: its new owner restores our changelog and skips
                # what it already holds
                log.warning("%s: commit after a rebalance failed (%s); the new owner resumes from the changelog",
                            self.label, exc)
        for tp in touched:
            done = self.states.get(tp)
            if done is not None:
                done.checkpointed(self._checkpoints[tp])

    def _in_order(self, tp: TopicPartition, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records of a stateful partition that continue where its state is: records before the expected
        offset were seen already; a batch starting at or past the offset the group had committed, while the
        state still expects earlier records, was fetched before we sought back (the seek brings them again)."""
        if tp not in self.states:
            return records
        expected = self.expected.get(tp)
        if expected is not None:
            records = [r for r in records if r.offset >= expected]
            stale = self.stale_from.get(tp)
            if records and stale is not None and records[0].offset > expected and records[0].offset >= stale:
                return []
        if records:
            self.expected[tp] = records[-1].offset + 1
            if self.expected[tp] >= self.stale_from.get(tp, self.expected[tp] + 1):
                del self.stale_from[tp]
        return records

    async def _write_states(self, touched: set[TopicPartition]) -> None:
        if not touched:
            return
        out = self.emitter()
        for tp in touched:
            state = self.states[tp]
            changelog = self.names.name(self.state_topics[self.names.logical(tp.topic)])
            for key, value in state.take_dirty().items():
                out.raw(changelog, orjson.dumps(value) if value is not None else None,  # type: ignore[arg-type]
                        key.encode("utf-8"), tp.partition)
            checkpoint = state.checkpoint()
            out.raw(changelog, orjson.dumps(checkpoint), CHECKPOINT_KEY, tp.partition)
            self._checkpoints[tp] = int(checkpoint["upto"])
        await self.deliver(out)
