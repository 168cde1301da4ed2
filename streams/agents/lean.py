"""The lean IoT/GPS ingest: a stateful batch consumer beside the Faust agents (streams.bus.stateful).

iot.readings (keyed by device id) go through one streams.core.devices ``DeviceProcessor`` per assigned
partition: one-minute aggregates (device_minutes), alarm episodes (one signal per episode, device.episodes),
lift commands within a second and lift repeat counters. field.tracks (keyed by inspector id) go through one
streams.core.field ``PatrolProcessor`` per partition: inspector_tracks rows and each inspector's patrol day
(patrol_days). Their keyed state is restored from the compacted ``<app id>-<topic>-state-changelog`` on every
assignment, so it survives restarts and rebalances and stays right with several workers. Dead letters and the
mapping of results to records are the ingest adapter's (streams.agents.ingest), as for the Faust agents.
"""
from __future__ import annotations

import logging
from typing import Any, cast

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.agents.ingest import IngestAdapter
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.consumer import inbound
from streams.bus.emit import STATE, Emitter
from streams.bus.sealing import DeadLetterSealer
from streams.bus.stateful import PartitionState, StatefulBatchConsumer
from streams.bus.topics import FIELD_TRACKS, IOT_READINGS, RAW_SCHEMAS, state_changelog
from streams.core.devices.processor import DeviceProcessor
from streams.core.field import PatrolProcessor
from streams.core.ingest import RejectRecord
from streams.core.model import IngestResult, IotReading
from streams.core.times import BadTimestamp, iso_to_ms
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)
SOURCE = {IOT_READINGS: "iot", FIELD_TRACKS: "field"}


class LeanIngest(StatefulBatchConsumer):
    """IoT readings and inspector tracks: aggregates, episodes, lift commands, patrol days, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, adapter: IngestAdapter, codec: SchemaRegistry, metrics: PipelineMetrics,
                 sealer: DeadLetterSealer | None = None, topics: list[str] | None = None,
                 group_suffix: str | None = None, **kw: Any) -> None:
        # the IoT and GPS feeds keep keyed state; other feeds (the case path's raw feeds, with
        # ``topics``/``group_suffix``: streams.agents.casepath) go through the adapter without state
        topics = list(topics or LEAN_RAW_TOPICS)
        changelogs = {topic: state_changelog(settings.app_id, topic) for topic in topics if topic in LEAN_RAW_TOPICS}
        super().__init__(settings, topics, changelogs, codec, metrics, **kw)
        if group_suffix is not None:
            self.group_suffix = group_suffix
        self.adapter = adapter
        self.ingestor = adapter.ingestor
        self.lateness_ms = int(settings.iot_lateness_seconds * 1000)
        self.idle_seconds = settings.iot_idle_close_seconds
        self.sealer = sealer  # the pipeline's: dead-letter originals are sealed

    def new_state(self, topic: str, partition: int) -> PartitionState:
        self.metrics.state_restores.labels(topic=topic).inc()
        if topic == FIELD_TRACKS:
            return self.ingestor.new_patrol_processor()
        return self.ingestor.new_device_processor(self.lateness_ms)

    def on_idle(self, tp: TopicPartition, state: PartitionState, idle_ms: int, out: Emitter) -> bool:
        """No reading for ``idle_ms``: the partition's event-time clock moves on by as much (its newest
        reading plus the idle time; not the wall clock, which a backlog or a skewed device clock may be far
        from), closing the minutes that passes."""
        if not isinstance(state, DeviceProcessor):
            return False
        newest = state.aggregator.max_ts
        if not state.aggregator.open or newest is None:
            return False
        result = IngestResult()
        state.advance(newest + idle_ms, result)
        self.adapter.emit_result(out, result)
        return True

    async def process(self, records: list[ConsumerRecord], out: Emitter) -> None:
        """A batch, partition by partition. A partition seen for the first time without an assignment (the
        testing bus drives this method directly) starts with fresh state."""
        now = self.adapter.clock()
        result = IngestResult()
        by_partition: dict[TopicPartition, list[ConsumerRecord]] = {}
        for rec in records:
            by_partition.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        for tp, recs in by_partition.items():
            logical = self.names.logical(tp.topic)
            self.metrics.events_in.labels(source=SOURCE.get(logical, logical), topic=logical).inc(len(recs))
            state = self.states.get(tp)
            if state is None and logical in self.state_topics:
                state = self.states[tp] = self.new_state(logical, tp.partition)
                state.restore(None, {})
            if isinstance(state, DeviceProcessor):
                self._readings(state, logical, recs, result, out, now)
            elif isinstance(state, PatrolProcessor):
                self._fixes(state, logical, recs, result, out)
            else:
                await self.adapter.handle([inbound(rec) for rec in recs], out)
        self.metrics.last_event_seconds.set(now)
        self.adapter.emit_result(out, result)

    def _readings(self, processor: DeviceProcessor, logical: str, records: list[ConsumerRecord],
                  result: IngestResult, out: Emitter, now: float) -> None:
        """Each reading inside its own failure boundary (its ledger row says ``state``: its effects are
        the partition's aggregates and episodes, sent with the batch); a bad one is dead-lettered."""
        decode, schema, rules = self.codec.decode, RAW_SCHEMAS[logical], self.adapter.rules
        restored_upto = processor.restored_upto
        late = processor.late
        now_ms = int(now * 1000)   # a record without a broker timestamp was ingested now
        for rec in records:
            replayed = rec.offset <= restored_upto   # its effects (and its ledger row) are there already
            if not replayed:
                out.begin(self.adapter.input_record(inbound(rec), logical), quiet_outcome=STATE)
            try:
                _, record = decode(rec.value, schema, rules, rec.timestamp or None)
                reading = cast(IotReading, record)   # the codec checked it against iot_reading
                if replayed:
                    processor.rebuild(reading, rec.offset)
                    continue
                processor.process(reading, rec.offset, rec.timestamp or now_ms, result)
            except (DecodeError, RejectRecord) as exc:
                if not replayed:
                    self.adapter.park(out, logical, str(exc))
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                if not replayed:
                    self.adapter.park(out, logical, f"internal error: {exc!r}")
        out.end()
        if processor.late > late:
            self.metrics.iot_late_readings.inc(processor.late - late)

    def _fixes(self, processor: PatrolProcessor, logical: str, records: list[ConsumerRecord], result: IngestResult,
               out: Emitter) -> None:
        decode, schema, rules = self.codec.decode, RAW_SCHEMAS[logical], self.adapter.rules
        tracks: list[dict[str, object]] = []
        for rec in records:
            if rec.offset <= processor.restored_upto:
                continue   # its rows were written and its effects are in the restored state
            out.begin(self.adapter.input_record(inbound(rec), logical), quiet_outcome=STATE)
            try:
                _, fix = decode(rec.value, schema, rules, rec.timestamp or None)
                ts_ms = iso_to_ms(fix["ts"])
                processor.process(fix["inspector_id"], ts_ms, fix["lat"], fix["lon"], rec.offset, tracks)
            except (DecodeError, BadTimestamp) as exc:
                reason = f"field 'ts': {exc}" if isinstance(exc, BadTimestamp) else str(exc)
                self.adapter.park(out, logical, reason)
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                self.adapter.park(out, logical, f"internal error: {exc!r}")
        out.end()
        _add_rows(result, "inspector_tracks", tracks)
        _add_rows(result, "patrol_days", [dict(row) for row in processor.flush()])


def _add_rows(result: IngestResult, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        existing = result.rows.get(table)
        result.rows[table] = [*existing, *rows] if existing else rows

