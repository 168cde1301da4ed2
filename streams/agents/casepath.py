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
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streams.agents.actions import ActionRouter
from streams.agents.casestate import LOG_CHECKPOINT, PartitionCaseState
from streams.agents.ingest import IngestAdapter
from streams.agents.lean import LeanIngest
from streams.agents.lifecycle import Deliveries, LifecycleAdapter, street_partitions
from streams.bus import clients, records
from streams.bus.codec import SchemaRegistry
from streams.bus.consumer import BatchConsumerService, Unavailable, inbound
from streams.bus.emit import Emitter, SendFailed, producer_broken
from streams.bus.produce import PartitionedSender
from streams.bus.sealing import DeadLetterSealer
from streams.bus.stateful import StatefulBatchConsumer
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
    TRIAGE,
    TopicNames,
)
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.field import CHECKED_PREFIX, ZeroReportBook
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

CASE_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES, OPEN311_REQUESTS)
HOUR_MS = 3_600_000
RESTORE_BATCH = 5000  # changelog records applied per RocksDB write while restoring


def case_ingest(settings: Settings, adapter: IngestAdapter, codec: SchemaRegistry,
                metrics: PipelineMetrics, sealer: DeadLetterSealer | None = None) -> LeanIngest:
    """The raw feeds of the case path on a lean batch consumer (no keyed state: each record goes through
    the ingest adapter's failure boundary, texts classified a batch at a time)."""
    service = LeanIngest(settings, adapter, codec, metrics, sealer=sealer, topics=list(CASE_RAW_TOPICS),
                         group_suffix="case-ingest")
    service.outputs_point = "ingest.outputs_sent"   # the Faust ingest agent's crash point: the fault suite's
    return service


class _CoarseClock(MutableMapping[str, Any]):
    """The zero-report book's mapping with its clock (the partition's last check, written on every tick) kept
    in memory and stored at most once a minute: not a changelog record per partition and second. After a
    restart the book re-checks from up to a minute back; an alert already raised is marked per station and
    day, so none is raised twice."""

    STORE_EVERY_MS = 60_000

    def __init__(self, stored: MutableMapping[str, Any]) -> None:
        self.stored = stored
        self.clock: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self.clock[key] if key in self.clock else self.stored[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.clock[key] if key in self.clock else self.stored.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith(CHECKED_PREFIX) and isinstance(value, int):
            self.clock[key] = value
            stored = self.stored.get(key)
            if stored is not None and value - int(stored) < self.STORE_EVERY_MS:
                return
        self.stored[key] = value

    def __delitem__(self, key: str) -> None:
        self.clock.pop(key, None)
        del self.stored[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


class LeanLifecycle(StatefulBatchConsumer):
    """case.inputs → the case engines of the assigned partitions; see the module docstring.

    The batch machinery is the stateful lean consumer's (streams.bus.stateful: producer, delivery until
    acknowledged, the rebalance listener, the lock); the state is a RocksDB per partition
    (streams.agents.casestate) restored from the changelog's tail rather than read whole into memory."""

    group_suffix = "lifecycle"
    max_records = 2000

    def __init__(self, settings: Settings, knowledge: Any, codec: SchemaRegistry, metrics: PipelineMetrics,
                 deliveries: Deliveries, sealer: DeadLetterSealer | None = None, **kw: Any) -> None:
        super().__init__(settings, [CASE_INPUTS], {CASE_INPUTS: CASE_STATE}, codec, metrics, **kw)
        self.knowledge = knowledge
        self.deliveries = deliveries
        self.sealer = sealer
        self.calendar = WorkCalendar(settings.holiday_override_file or DEFAULT_OVERRIDE_FILE)
        self.case_states: dict[int, PartitionCaseState] = {}
        self.adapters: dict[int, LifecycleAdapter] = {}
        self.next_offset: dict[int, int] = {}     # partition -> next input offset the state wants
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
        await super().on_start()
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
            for state in self.case_states.values():
                state.close()
            self.case_states.clear()
        if self.producer is not None:
            await self.producer.stop()

    def open_case_counts(self) -> dict[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = {}
        for state in list(self.case_states.values()):
            for key, n in state.open_counts().items():
                total[key] = total.get(key, 0) + n
        return total

    # ------------------------------------------------------------ rebalance
    async def revoked(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes and commits first
            for tp in partitions:
                state = self.case_states.pop(tp.partition, None)
                self.adapters.pop(tp.partition, None)
                self.next_offset.pop(tp.partition, None)
                if state is not None:
                    state.close()  # the files stay: a later assignment catches up from the changelog's tail
            self.metrics.case_partitions.set(len(self.case_states))

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        async with self.lock:
            await self._drop_standbys([tp.partition for tp in partitions])  # their files become the active state
            for tp in partitions:
                started = time.monotonic()
                state = self._new_state(tp.partition)
                applied = await self._catch_up(state)
                await asyncio.to_thread(state.rebuild)  # the live cases only; off the event loop
                self.case_states[tp.partition] = state
                adapter = LifecycleAdapter(state.engine, self.codec, self.metrics, self.names,
                                           deliveries=self.deliveries, journals=(state,),
                                           rebuild=state.rebuild, zero_reports=self._zero_reports(state),
                                           owns=street_partitions(self._input_partitions()))
                adapter.stale = False
                self.adapters[tp.partition] = adapter
                assert self.consumer is not None
                if state.upto is not None:
                    self.consumer.seek(tp, state.upto)
                    self.next_offset[tp.partition] = state.upto
                self.restore_seconds[tp.partition] = time.monotonic() - started
                self.metrics.state_restore_seconds.set(self.restore_seconds[tp.partition])
                log.info("lifecycle: partition %d ready in %.1f s (%d changelog records applied, %d cases indexed)",
                         tp.partition, self.restore_seconds[tp.partition], applied, len(state.engine.live))
            self.metrics.case_partitions.set(len(self.case_states))
            self.ready.set()

    def _zero_reports(self, state: PartitionCaseState) -> ZeroReportBook:
        """The partition's zero-report book 零报告 over its RocksDB state (the Faust path: a table)."""
        return ZeroReportBook(self.knowledge.field, _CoarseClock(state.zero_reports),
                              self.settings.zero_report_deadline, self.calendar.is_workday,
                              self.knowledge.city.unit_of)

    def _input_partitions(self) -> int:
        assert self.consumer is not None
        return len(self.consumer.partitions_for_topic(self.names.name(CASE_INPUTS)) or ()) or \
            self.settings.topic_partitions

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
    async def _ticks(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.settings.timer_tick_seconds)
            async with self.lock:
                await self.run_tick(int(time.time() * 1000))

    async def run_batch(self, batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Each input inside the lifecycle adapter's failure boundary (one ledger row, or one dead letter);
        then :meth:`_finish` writes outputs before state, and the input is committed last."""
        assert self.consumer is not None
        out = self.emitter()
        latest: dict[int, int] = {}
        for tp, recs in batches.items():
            adapter = self.adapters.get(tp.partition)
            if adapter is None or not recs:
                continue  # revoked meanwhile: its new owner reads it
            expected = self.next_offset.get(tp.partition, 0)
            recs = [r for r in recs if r.offset >= expected]  # seen before a seek back: skip
            if not recs:
                continue
            await adapter.handle([inbound(rec) for rec in recs], out)
            latest[tp.partition] = recs[-1].offset + 1
            self.next_offset[tp.partition] = latest[tp.partition]
        if not latest:
            return
        await self._finish(out, dict(latest))
        offsets = {TopicPartition(self.names.name(CASE_INPUTS), p): OffsetAndMetadata(o, "")
                   for p, o in latest.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # a rebalance took the partition: its new owner resumes from our checkpoint on the changelog
            log.warning("lifecycle: commit after a rebalance failed (%s)", exc)

    async def run_tick(self, now_ms: int) -> None:
        """Timers fire here (the service owns its partitions' state: no tick record on case.inputs)."""
        out = self.emitter()
        touched: dict[int, int | None] = {}
        for partition, state in list(self.case_states.items()):
            try:
                outputs = state.engine.on_tick(now_ms, partition)
                adapter = self.adapters[partition]
                if adapter.zero_reports is not None:
                    outputs.extend(adapter.zero_report_alerts(now_ms, partition))
                changed: dict[str, Any] = {}
                self.adapters[partition].emit_outputs(out, outputs, changed)
                out.emit(records.case_record(row) for row in changed.values())
            except Exception:  # a bug in one case's timer must not stop the clock of every case
                log.exception("lifecycle: tick of partition %d failed; its state is rebuilt", partition)
                state.rollback()
                continue
            if state.has_changes():
                touched[partition] = None
        if touched:
            await self._finish(out, touched)

    async def _finish(self, out: Emitter, upto: dict[int, int | None]) -> None:
        """Outputs acknowledged → changelog and sources acknowledged → RocksDB written. A crash between
        any two replays the inputs from the checkpoint into the same outputs (same ids)."""
        await self.deliver(out)                                          # 1. outputs
        crash_point("lifecycle.outputs_sent")
        changelog, sources_topic = self.names.name(CASE_STATE), self.names.name(CASE_SOURCES)
        state_out = self.emitter()
        written: list[int] = []
        for partition in upto:
            state = self.case_states.get(partition)
            if state is None:
                continue
            log_records, sources = state.changelog_records()
            for key, value in log_records:
                state_out.raw(changelog, value, key, partition)  # type: ignore[arg-type]
            for source_id, case_id in sources.items():
                state_out.raw(sources_topic, case_id.encode() if case_id is not None else None,  # type: ignore[arg-type]
                              source_id.encode())
            written.append(partition)
        await self.deliver(state_out)                                    # 2. changelog and sources
        # 3. the checkpoints last: each past every record of its batch; their offsets are what the local
        # RocksDB then holds of the changelog (a restart applies only what follows)
        offsets = await self._send_checkpoints({partition: self.case_states[partition].checkpoint(upto[partition])
                                                for partition in written})
        crash_point("lifecycle.state_written")
        for partition, offset in offsets.items():
            state = self.case_states.get(partition)
            if state is not None:
                state.persist(upto[partition], offset + 1)

    async def _send_checkpoints(self, checkpoints: dict[int, bytes]) -> dict[int, int]:
        """Send the partitions' checkpoint records together until each is acknowledged (as
        deliver_until_acked); their changelog offsets by partition."""
        topic = self.names.name(CASE_STATE)
        offsets: dict[int, int] = {}
        delay = 0.5
        while True:
            todo = [partition for partition in checkpoints if partition not in offsets]
            failure: BaseException | None = None
            try:
                producer = await self.started_producer()
                futures = [await producer.send(topic, checkpoints[partition], key=LOG_CHECKPOINT, partition=partition)
                           for partition in todo]
                acks = await asyncio.gather(*futures, return_exceptions=True)
                for partition, ack in zip(todo, acks, strict=True):
                    if isinstance(ack, BaseException):
                        failure = ack
                    else:
                        offsets[partition] = int(ack.offset)
            except Exception as exc:
                failure = exc
            if failure is None:
                return offsets
            if self.should_stop:
                raise failure
            log.warning("lifecycle: checkpoints of partitions %s not acknowledged (%s); retrying",
                        sorted(set(checkpoints) - set(offsets)), failure)
            if producer_broken(failure):
                await self.renew_producer()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)

    # ------------------------------------------------------------ standby copies
    def _closed_ttl_ms(self) -> int | None:
        hours = self.settings.closed_case_retention_hours
        return int(hours * HOUR_MS) if hours > 0 else None

    def _new_state(self, partition: int) -> PartitionCaseState:
        return PartitionCaseState(partition, self.root / str(partition), self.knowledge, self.calendar,
                                  self.settings.auto_dispatch,
                                  closed_ttl_ms=self._closed_ttl_ms(),
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
            async with self.standby_lock:
                # ours, or being assigned to us (the rebalance listener may still be restoring it): decided
                # under the lock, so a partition is never opened as a standby while it opens as active
                owned = set(self.case_states) | {tp.partition for tp in self.consumer.assignment()
                                                 if tp.topic == inputs}
                every = self.standby_reader.partitions_for_topic(topic) or set()
                wanted = every - owned
                if wanted != set(self.standbys):
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

    topic = CASE_SOURCES
    directory = "sources"

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

        path = Path(self.settings.data_dir) / self.directory
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), Options(raw_mode=True))
        self.consumer = AIOKafkaConsumer(**clients.topic_reader(self.settings), fetch_max_bytes=32 * 1024 * 1024,
                                         max_poll_records=20000)
        await self.consumer.start()
        topic = self.names.name(self.topic)
        partitions: set[int] = set()
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

    def entry(self, rec: ConsumerRecord) -> tuple[bytes | None, bytes | None]:
        """(key, value) to store for a record of the topic; value None deletes, key None skips."""
        return rec.key, rec.value


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
                        key, value = self.entry(rec)
                        if key is None:
                            continue
                        if value is None:
                            batch.delete(key)
                        else:
                            batch.put(key, value)
                    batch.put(b"\x00offset|%d" % tp.partition, str(recs[-1].offset + 1).encode())
                self.db.write(batch)
            if not self.caught_up:
                positions = {tp: await self.consumer.position(tp) for tp in self._targets}
                self.caught_up = all(positions[tp] >= end for tp, end in self._targets.items())


class TriageIndex(SourceIndex):
    """The triage records 人工分拨 by triage id, from every partition of ``triage`` into a local RocksDB: what the
    centre's from_triage action reads (the Faust path keeps them in a GlobalTable)."""

    topic = TRIAGE
    directory = "triage"

    def __init__(self, settings: Settings, codec: SchemaRegistry, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.codec = codec

    def get(self, triage_id: str, default: Any = None) -> Any:
        value = self.db.get(triage_id.encode()) if self.db is not None else None
        return default if value is None else orjson.loads(value)

    def entry(self, rec: ConsumerRecord) -> tuple[bytes | None, bytes | None]:
        try:
            _, item = self.codec.decode(rec.value, "triage")
        except Exception as exc:   # not ours to dead-letter: the ingest wrote it; skip it, loudly
            log.warning("triage index: record %s[%d]@%d unreadable: %s", rec.topic, rec.partition, rec.offset, exc)
            return None, None
        return str(item["triage_id"]).encode(), orjson.dumps(item)


class LeanActions(BatchConsumerService):
    """case.actions → case.inputs (keyed by the case's street) on a lean batch consumer: each action inside
    the router's failure boundary; while the broker does not acknowledge, the batch waits with the partitions
    paused and the consumer polling (streams.bus.consumer), so the group is kept."""

    group_suffix = "actions"

    def __init__(self, settings: Settings, router: ActionRouter, codec: SchemaRegistry, metrics: PipelineMetrics,
                 sealer: DeadLetterSealer | None = None, **kw: Any) -> None:
        super().__init__(settings, [CASE_ACTIONS], metrics, **kw)
        self.router = router
        self.codec = codec
        self.sealer = sealer
        self.producer: AIOKafkaProducer | None = None
        self._sender = PartitionedSender(self._started_producer)

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _started_producer(self) -> AIOKafkaProducer:
        if self.producer is None:   # first use, or replaced after an outage
            producer = AIOKafkaProducer(**clients.lean_producer(self.settings))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self.producer = producer
        return self.producer

    def _emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            return await (await self._started_producer()).send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.names, {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}, sealer=self.sealer,
                       max_message_bytes=self.settings.kafka_max_message_bytes, send_many=self._sender)

    async def prepare(self, records_: list[ConsumerRecord]) -> Emitter:
        out = self._emitter()
        await self.router.handle([inbound(rec) for rec in records_], out)
        return out

    async def deliver(self, outputs: Emitter) -> None:
        try:
            await outputs.flush()   # what was acknowledged leaves the emitter; a retry sends the rest
        except SendFailed as exc:
            if exc.broken and self.producer is not None:
                old, self.producer = self.producer, None
                await old.stop()
            raise Unavailable(str(exc)) from exc
