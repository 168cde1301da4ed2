"""The case path on lean aiokafka consumers (``settings.case_path = "lean"``, the default).

Faust's per-event streams and its table changelog (handed to its producer one record at a time) held the
case path to a few hundred merges a second; the IoT path had shown that a ``getmany`` loop keeps up. So the
case path is four plain services, each in a consumer group, sharing partitions across worker processes:

- **case ingest** (:func:`case_ingest`): hotline calls, field reports, camera alerts, registry changes and
  Open311 requests → the ingest adapter → ``case.inputs`` keyed by street (and triage, dead letters, rows);
- **lifecycle** (:class:`LeanLifecycle`): ``case.inputs`` → one case engine per assigned partition over its
  RocksDB state (streams.agents.casestate) → case events, dispatches, SLA alerts, webhook deliveries and the
  current state of each changed case; the partition's changed documents go to its compacted changelog
  ``case.state``, the changed source ids to ``case.sources``; clock ticks are the service's own (a tick needs
  no Kafka round trip: the service owns the partition's state). With ``case_standbys`` every worker also
  keeps a **standby** copy of the partitions it does not own, tailing their changelogs into the same RocksDB
  layout: when a worker dies, the one taking its partitions over only reads the changelog's last records;
- **source index** (:class:`SourceIndex`): every worker reads all of ``case.sources`` into a local RocksDB:
  which case holds a source record, for actions that name only their source;
- **actions router** (:class:`LeanActions`): ``case.actions`` → ``case.inputs`` keyed by the case's street.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams.agents.actions import ActionRouter
from streams.agents.casestate import LOG_CHECKPOINT, PartitionCaseState
from streams.agents.ingest import IngestAdapter
from streams.agents.lean import LeanIngest
from streams.agents.lifecycle import Deliveries, LifecycleAdapter
from streams.bus import clients, records
from streams.bus.codec import SchemaRegistry
from streams.bus.consumer import BatchConsumerService, inbound
from streams.bus.emit import Emitter
from streams.bus.topics import (
    CAMERA_ALERTS,
    CASE_ACTIONS,
    CASE_INPUTS,
    CASE_SOURCES,
    CASE_STATE,
    FIELD_REPORTS,
    HOTLINE_CALLS,
    INTERNAL_SCHEMAS,
    OPEN311_REQUESTS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    TopicNames,
)
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

CASE_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES, OPEN311_REQUESTS)
HOUR_MS = 3_600_000
RESTORE_BATCH = 5000  # changelog records applied per RocksDB write while restoring


def case_ingest(settings: Settings, adapter: IngestAdapter, codec: SchemaRegistry,
                metrics: PipelineMetrics) -> LeanIngest:
    """The raw feeds of the case path on a lean batch consumer (texts classified a batch at a time)."""
    return LeanIngest(settings, adapter, codec, metrics, topics=list(CASE_RAW_TOPICS), group_suffix="case-ingest")


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**clients.derived_producer(settings))


def _emitter(producer: AIOKafkaProducer, codec: SchemaRegistry, names: TopicNames) -> Emitter:
    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return await producer.send(topic, value, key=key, partition=partition)

    return Emitter(send, codec, names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: LeanLifecycle) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.assigned(list(assigned))


class LeanLifecycle(mode.Service):
    """case.inputs → the case engines of the assigned partitions; see the module docstring."""

    max_records = 2000

    def __init__(self, settings: Settings, knowledge: Any, codec: SchemaRegistry, metrics: PipelineMetrics,
                 deliveries: Deliveries, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.knowledge = knowledge
        self.codec = codec
        self.metrics = metrics
        self.deliveries = deliveries
        self.names = TopicNames(settings.topic_prefix)
        self.calendar = WorkCalendar(settings.holiday_override_file or DEFAULT_OVERRIDE_FILE)
        self.states: dict[int, PartitionCaseState] = {}
        self.adapters: dict[int, LifecycleAdapter] = {}
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.expected: dict[int, int] = {}     # partition -> next input offset the state wants
        self.restore_seconds: dict[int, float] = {}
        self.ready = asyncio.Event()
        # standby copies of the partitions another worker owns (case_standbys): partition -> state, and its reader
        self.standbys: dict[int, PartitionCaseState] = {}
        self.standby_lock = asyncio.Lock()
        self.standby_reader: AIOKafkaConsumer | None = None

    @property
    def root(self) -> Path:
        return Path(self.settings.data_dir) / "cases"

    # ------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        self.producer = _producer(self.settings)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(**clients.batch_consumer(
            self.settings, f"{self.settings.app_id}-lifecycle", self.max_records))
        await self.consumer.start()
        self.consumer.subscribe([self.names.name(CASE_INPUTS)], listener=_Rebalance(self))
        self.add_future(self._consume())
        self.add_future(self._ticks())
        if self.settings.case_standbys:
            self.standby_reader = AIOKafkaConsumer(**clients.topic_reader(self.settings),
                                                   fetch_max_bytes=32 * 1024 * 1024, max_poll_records=2000)
            await self.standby_reader.start()
            self.add_future(self._standby_loop())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        async with self.standby_lock:
            if self.standby_reader is not None:
                await self.standby_reader.stop()
            for state in self.standbys.values():
                state.close()
            self.standbys.clear()
        async with self.lock:
            for state in self.states.values():
                state.close()
            self.states.clear()
        if self.producer is not None:
            await self.producer.stop()

    def open_case_counts(self) -> dict[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = {}
        for state in list(self.states.values()):
            for key, n in state.open_counts().items():
                total[key] = total.get(key, 0) + n
        return total

    # ------------------------------------------------------------ rebalance
    async def revoked(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes and commits first
            for tp in partitions:
                state = self.states.pop(tp.partition, None)
                self.adapters.pop(tp.partition, None)
                self.expected.pop(tp.partition, None)
                if state is not None:
                    state.close()  # the files stay: a later assignment catches up from the changelog's tail
            self.metrics.case_partitions.set(len(self.states))

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:
            await self._drop_standbys([tp.partition for tp in partitions])  # their files become the active state
            for tp in partitions:
                started = time.monotonic()
                state = self._new_state(tp.partition)
                applied = await self._catch_up(state)
                await asyncio.to_thread(state.rebuild)  # the live cases only; off the event loop
                self.states[tp.partition] = state
                self.adapters[tp.partition] = LifecycleAdapter(state.engine, self.codec, self.metrics, self.names,
                                                               deliveries=self.deliveries)
                self.adapters[tp.partition].stale = False
                assert self.consumer is not None
                if state.upto is not None:
                    self.consumer.seek(tp, state.upto)
                    self.expected[tp.partition] = state.upto
                self.restore_seconds[tp.partition] = time.monotonic() - started
                self.metrics.state_restore_seconds.set(self.restore_seconds[tp.partition])
                log.info("lifecycle: partition %d ready in %.1f s (%d changelog records applied, %d cases indexed)",
                         tp.partition, self.restore_seconds[tp.partition], applied, len(state.engine.live))
            self.metrics.case_partitions.set(len(self.states))
            self.ready.set()

    async def _catch_up(self, state: PartitionCaseState) -> int:
        """Apply the changelog from the offset the local RocksDB holds to its end (all of it when new here)."""
        tp = TopicPartition(self.names.name(CASE_STATE), state.partition)
        reader = AIOKafkaConsumer(**clients.topic_reader(self.settings), fetch_max_bytes=32 * 1024 * 1024,
                                  max_poll_records=RESTORE_BATCH)
        await reader.start()
        applied = 0
        try:
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            start = state.changelog_next
            beginning = (await reader.beginning_offsets([tp]))[tp]
            if start < beginning or start > end:
                # compaction or a recreated topic: what we hold is not a prefix of the log; start over
                state.destroy()
                state.__init__(state.partition, state.path, self.knowledge, self.calendar,  # type: ignore[misc]
                               self.settings.auto_dispatch, state.engine.closed_ttl_ms,
                               state.engine.index_lateness_ms)
                start = beginning
            reader.seek(tp, start)
            position = start
            while position < end:
                fetched = await reader.getmany(tp, timeout_ms=1000)
                for records_ in fetched.values():
                    for rec in records_:
                        state.apply_changelog(rec.key or b"", rec.value)
                        position = rec.offset + 1
                        applied += 1
                        if applied % RESTORE_BATCH == 0:
                            state.persist(None, position)
                            await asyncio.sleep(0)
            state.persist(None, max(position, start))
        finally:
            await reader.stop()
        return applied

    # ------------------------------------------------------------ the loop
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except Exception as exc:
                if self.should_stop:
                    return
                log.warning("lifecycle: fetch failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if batches:
                async with self.lock:
                    await self.run_batch(batches)

    async def _ticks(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.settings.timer_tick_seconds)
            async with self.lock:
                await self.run_tick(int(time.time() * 1000))

    async def run_batch(self, batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.producer is not None and self.consumer is not None
        out = _emitter(self.producer, self.codec, self.names)
        latest_cases: dict[str, dict[str, Any]] = {}
        offsets: dict[TopicPartition, int] = {}
        for tp, recs in batches.items():
            adapter = self.adapters.get(tp.partition)
            if adapter is None:
                continue  # revoked meanwhile: its new owner reads it
            expected = self.expected.get(tp.partition, 0)
            recs = [r for r in recs if r.offset >= expected]  # seen before a seek back: skip
            if not recs:
                continue
            for rec in recs:
                item = inbound(rec)
                try:
                    outputs = adapter.apply(item)
                except Exception as exc:  # a bad input or a bug must not stop every case: park it, loudly
                    known = isinstance(exc, (ValueError, KeyError))
                    if not known:
                        log.exception("lifecycle: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                    adapter.dead_letter(out, CASE_INPUTS, item, str(exc) if known else f"internal error: {exc!r}")
                    continue
                adapter.emit_outputs(out, outputs, latest_cases)
            offsets[tp] = recs[-1].offset + 1
            self.expected[tp.partition] = offsets[tp]
        if not offsets:
            return
        await self._finish(out, latest_cases, {tp.partition: o for tp, o in offsets.items()})
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # a rebalance took the partition: its new owner resumes from our checkpoint on the changelog
            log.warning("lifecycle: commit after a rebalance failed (%s)", exc)

    async def run_tick(self, now_ms: int) -> None:
        assert self.producer is not None
        out = _emitter(self.producer, self.codec, self.names)
        latest_cases: dict[str, dict[str, Any]] = {}
        touched: dict[int, int | None] = {}
        for partition, state in list(self.states.items()):
            outputs = state.engine.on_tick(now_ms, partition)
            self.adapters[partition].emit_outputs(out, outputs, latest_cases)
            if state.has_changes():
                touched[partition] = None
        if touched:
            await self._finish(out, latest_cases, touched)

    async def _finish(self, out: Emitter, latest_cases: dict[str, dict[str, Any]],
                      upto: dict[int, int | None]) -> None:
        """Outputs acknowledged → changelog and sources acknowledged → RocksDB written."""
        out.emit(records.case_record(row) for row in latest_cases.values())
        await out.flush()
        assert self.producer is not None
        changelog, sources_topic = self.names.name(CASE_STATE), self.names.name(CASE_SOURCES)
        checkpoints: dict[int, Any] = {}
        futures = []
        for partition, offset in upto.items():
            state = self.states.get(partition)
            if state is None:
                continue
            log_records, sources = state.changelog_records()
            for key, value in log_records:
                futures.append(await self.producer.send(changelog, value, key=key, partition=partition))
            for source_id, case_id in sources.items():
                futures.append(await self.producer.send(
                    sources_topic, case_id.encode() if case_id is not None else None, key=source_id.encode()))
            checkpoints[partition] = await self.producer.send(changelog, state.checkpoint(offset),
                                                              key=LOG_CHECKPOINT, partition=partition)
        await asyncio.gather(*futures)
        for partition, future in checkpoints.items():
            metadata = await future
            self.states[partition].persist(upto[partition], metadata.offset + 1)


    # ------------------------------------------------------------ standby copies
    def _new_state(self, partition: int) -> PartitionCaseState:
        return PartitionCaseState(partition, self.root / str(partition), self.knowledge, self.calendar,
                                  self.settings.auto_dispatch,
                                  closed_ttl_ms=int(self.settings.closed_case_ttl_hours * HOUR_MS),
                                  index_lateness_ms=int(self.settings.dedup_lateness_hours * HOUR_MS))

    async def _drop_standbys(self, partitions: list[int]) -> None:
        async with self.standby_lock:
            for partition in partitions:
                state = self.standbys.pop(partition, None)
                if state is not None:
                    state.close()
            self._assign_standby_reader()

    def _assign_standby_reader(self) -> None:
        if self.standby_reader is not None:
            topic = self.names.name(CASE_STATE)
            tps = [TopicPartition(topic, p) for p in sorted(self.standbys)]
            self.standby_reader.assign(tps)
            for tp in tps:
                self.standby_reader.seek(tp, self.standbys[tp.partition].changelog_next)

    async def _standby_loop(self) -> None:
        """Tail the changelogs of the partitions another worker owns into their local RocksDB copies."""
        assert self.standby_reader is not None and self.consumer is not None
        topic = self.names.name(CASE_STATE)
        while not self.should_stop:
            if not self.ready.is_set():
                await asyncio.sleep(0.5)  # the first assignment first
                continue
            inputs = self.names.name(CASE_INPUTS)
            # ours, or being assigned to us (the rebalance listener may still be restoring it)
            owned = set(self.states) | {tp.partition for tp in self.consumer.assignment() if tp.topic == inputs}
            every = self.standby_reader.partitions_for_topic(topic) or set()
            wanted = every - owned
            if wanted != set(self.standbys):
                async with self.standby_lock:
                    for partition in set(self.standbys) - wanted:
                        self.standbys.pop(partition).close()
                    for partition in wanted - set(self.standbys):
                        self.standbys[partition] = self._new_state(partition)
                    self._assign_standby_reader()
            if not self.standbys:
                await asyncio.sleep(1.0)
                continue
            try:
                fetched = await self.standby_reader.getmany(timeout_ms=500, max_records=2000)
            except Exception as exc:
                if self.should_stop:
                    return
                log.warning("lifecycle: standby fetch failed: %s", exc)
                await asyncio.sleep(1)
                continue
            async with self.standby_lock:
                for tp, recs in fetched.items():
                    state = self.standbys.get(tp.partition)
                    if state is None or not recs:
                        continue
                    recs = [r for r in recs if r.offset >= state.changelog_next]
                    for rec in recs:
                        state.apply_changelog(rec.key or b"", rec.value)
                    if recs:
                        state.persist(None, recs[-1].offset + 1)
            await asyncio.sleep(0)


class SourceIndex(mode.Service):
    """Which case holds a source record: every partition of ``case.sources`` in a local RocksDB."""

    def __init__(self, settings: Settings, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.db: Any = None
        self.consumer: AIOKafkaConsumer | None = None
        self.caught_up = False
        self._targets: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        from rocksdict import Options, Rdict

        path = Path(self.settings.data_dir) / "sources"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), Options(raw_mode=True))
        self.consumer = AIOKafkaConsumer(**clients.topic_reader(self.settings), fetch_max_bytes=32 * 1024 * 1024,
                                         max_poll_records=20000)
        await self.consumer.start()
        topic = self.names.name(CASE_SOURCES)
        partitions = set()
        for _ in range(100):
            partitions = self.consumer.partitions_for_topic(topic) or set()
            if partitions:
                break
            await self.consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        for tp in tps:
            stored = self.db.get(b"\x00offset|%d" % tp.partition)
            if stored is not None:
                self.consumer.seek(tp, int(stored))
            else:
                await self.consumer.seek_to_beginning(tp)
        self._targets = dict(await self.consumer.end_offsets(tps)) if tps else {}
        self.caught_up = not any(self._targets.values())
        self.add_future(self._consume())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.db is not None:
            self.db.close()

    def get(self, source_id: str, default: Any = None) -> Any:
        value = self.db.get(source_id.encode()) if self.db is not None else None
        return default if value is None else value.decode()

    async def _consume(self) -> None:
        from rocksdict import WriteBatch

        assert self.consumer is not None
        while not self.should_stop:
            try:
                fetched = await self.consumer.getmany(timeout_ms=500)
            except Exception as exc:
                if self.should_stop:
                    return
                log.warning("source index: fetch failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if fetched:
                batch = WriteBatch(raw_mode=True)
                for tp, recs in fetched.items():
                    for rec in recs:
                        if rec.key is None:
                            continue
                        if rec.value is None:
                            batch.delete(rec.key)
                        else:
                            batch.put(rec.key, rec.value)
                    batch.put(b"\x00offset|%d" % tp.partition, str(recs[-1].offset + 1).encode())
                self.db.write(batch)
            if not self.caught_up:
                positions = {tp: await self.consumer.position(tp) for tp in self._targets}
                self.caught_up = all(positions[tp] >= end for tp, end in self._targets.items())


class LeanActions(BatchConsumerService):
    """case.actions → case.inputs (keyed by the case's street) on a lean consumer."""

    group_suffix = "actions"

    def __init__(self, settings: Settings, router: ActionRouter, codec: SchemaRegistry, metrics: PipelineMetrics,
                 **kw: Any) -> None:
        super().__init__(settings, [CASE_ACTIONS], metrics, **kw)
        self.router = router
        self.codec = codec
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self.producer = _producer(self.settings)
        await self.producer.start()
        await super().on_start()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    async def handle(self, records_: list[ConsumerRecord]) -> None:
        assert self.producer is not None
        out = _emitter(self.producer, self.codec, self.names)
        await self.router.handle([inbound(rec) for rec in records_], out)
        await out.flush()
