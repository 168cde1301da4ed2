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
from streams.bus.emit import Emitter
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
                 sealer: DeadLetterSealer | None = None, **kw: Any) -> None:
        changelogs = {topic: state_changelog(settings.app_id, topic) for topic in LEAN_RAW_TOPICS}
        super().__init__(settings, list(LEAN_RAW_TOPICS), changelogs, codec, metrics, **kw)
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
        decode, schema = self.codec.decode, RAW_SCHEMAS[logical]
        restored_upto = processor.restored_upto
        late = processor.late
        now_ms = int(now * 1000)   # a record without a broker timestamp was ingested now
        for rec in records:
            try:
                _, record = decode(rec.value, schema)
                reading = cast(IotReading, record)   # the codec checked it against iot_reading
                if rec.offset <= restored_upto:
                    processor.rebuild(reading, rec.offset)   # its effects are in the restored state already
                    continue
                processor.process(reading, rec.offset, rec.timestamp or now_ms, result)
            except (DecodeError, RejectRecord) as exc:
                if rec.offset > restored_upto:
                    self.adapter.dead_letter(out, logical, inbound(rec), str(exc))
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                if rec.offset > restored_upto:
                    self.adapter.dead_letter(out, logical, inbound(rec), f"internal error: {exc!r}")
        if processor.late > late:
            self.metrics.iot_late_readings.inc(processor.late - late)

    def _fixes(self, processor: PatrolProcessor, logical: str, records: list[ConsumerRecord], result: IngestResult,
               out: Emitter) -> None:
        decode, schema = self.codec.decode, RAW_SCHEMAS[logical]
        tracks: list[dict[str, object]] = []
        for rec in records:
            try:
                _, fix = decode(rec.value, schema)
                ts_ms = iso_to_ms(fix["ts"])
                if rec.offset <= processor.restored_upto:
                    continue   # its rows were written and its effects are in the restored state
                processor.process(fix["inspector_id"], ts_ms, fix["lat"], fix["lon"], rec.offset, tracks)
            except (DecodeError, BadTimestamp) as exc:
                if rec.offset > processor.restored_upto:
                    reason = f"field 'ts': {exc}" if isinstance(exc, BadTimestamp) else str(exc)
                    self.adapter.dead_letter(out, logical, inbound(rec), reason)
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                self.adapter.dead_letter(out, logical, inbound(rec), f"internal error: {exc!r}")
        _add_rows(result, "inspector_tracks", tracks)
        _add_rows(result, "patrol_days", [dict(row) for row in processor.flush()])


def _add_rows(result: IngestResult, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        existing = result.rows.get(table)
        result.rows[table] = [*existing, *rows] if existing else rows

