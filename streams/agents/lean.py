"""The lean IoT/GPS ingest: a stateful batch consumer beside the Faust agents (streams.bus.stateful).

iot.readings (keyed by device id) go through one streams.core.devices ``DeviceProcessor`` per assigned
partition: one-minute aggregates (device_minutes), alarm episodes (one signal per episode, device.episodes),
lift commands within a second and lift repeat counters. Its keyed state is restored from the compacted
``<app id>-iot.readings-state-changelog`` on every assignment, so it survives restarts and rebalances and stays
right with several workers. field.tracks go through the Ingestor as before (inspector_tracks rows).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.agents.app import reason_label
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.emit import Emitter
from streams.bus.stateful import PartitionState, StatefulBatchConsumer
from streams.bus.topics import FIELD_TRACKS, IOT_READINGS, RAW_SCHEMAS, state_changelog
from streams.core.devices.processor import DeviceProcessor
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.model import IngestResult
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

LEAN_RAW_TOPICS = (IOT_READINGS, FIELD_TRACKS)
SOURCE = {IOT_READINGS: "iot", FIELD_TRACKS: "field"}


class LeanIngest(StatefulBatchConsumer):
    """IoT readings and inspector tracks: aggregates, episodes, lift commands, rows in bulk."""

    group_suffix = "lean-ingest"

    def __init__(self, settings: Settings, ingestor: Ingestor, codec: SchemaRegistry, metrics: PipelineMetrics,
                 emit_result: Callable[[Emitter, IngestResult], None], **kw: Any) -> None:
        changelog = state_changelog(settings.app_id, IOT_READINGS)
        super().__init__(settings, list(LEAN_RAW_TOPICS), {IOT_READINGS: changelog}, codec, metrics, **kw)
        self.ingestor = ingestor
        self.emit_result = emit_result  # Pipeline.emit_ingest_result
        self.lateness_ms = int(settings.iot_lateness_seconds * 1000)
        self.idle_seconds = settings.iot_idle_close_seconds

    def new_state(self, topic: str, partition: int) -> PartitionState:
        self.metrics.state_restores.labels(topic=topic).inc()
        return self.ingestor.new_device_processor(self.lateness_ms)

    def on_idle(self, tp: TopicPartition, state: PartitionState, idle_ms: int, out: Emitter) -> bool:
        """No reading for ``idle_ms``: the partition's event-time clock moves on by as much (its newest
        reading plus the idle time; not the wall clock, which a backlog or a skewed device clock may be far
        from), closing the minutes that passes."""
        assert isinstance(state, DeviceProcessor)
        newest = state.aggregator.max_ts
        if not state.aggregator.open or newest is None:
            return False
        result = IngestResult()
        state.advance(newest + idle_ms, result)
        self.emit_result(out, result)
        return True

    async def process(self, batches: dict[TopicPartition, list[ConsumerRecord]], out: Emitter) -> None:
        now = time.time()
        result = IngestResult()
        for tp, records in batches.items():
            logical = self.names.logical(tp.topic)
            self.metrics.events_in.labels(source=SOURCE[logical], topic=logical).inc(len(records))
            processor = self.states.get(tp)
            if processor is not None:
                assert isinstance(processor, DeviceProcessor)
                self._readings(processor, logical, records, result, out, now)
            else:
                self._tracks(logical, records, result, out, now)
        self.metrics.last_event_seconds.set(now)
        self.emit_result(out, result)

    def _readings(self, processor: DeviceProcessor, logical: str, records: list[ConsumerRecord],
                  result: IngestResult, out: Emitter, now: float) -> None:
        decode, schema = self.codec.decode, RAW_SCHEMAS[logical]
        restored_upto = processor.restored_upto
        late = processor.late
        now_ms = int(now * 1000)
        for rec in records:
            try:
                _, record = decode(rec.value, schema)
                if rec.offset <= restored_upto:
                    processor.rebuild(record, rec.offset)   # already applied before the restart
                    continue
                processor.process(record, rec.offset, rec.timestamp or now_ms, result)
            except (DecodeError, RejectRecord) as exc:
                if rec.offset > restored_upto:
                    self._dead_letter(out, logical, rec, str(exc), now_ms)
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                if rec.offset > restored_upto:
                    self._dead_letter(out, logical, rec, f"internal error: {exc!r}", now_ms)
        if processor.late > late:
            self.metrics.iot_late_readings.inc(processor.late - late)

    def _tracks(self, logical: str, records: list[ConsumerRecord], result: IngestResult, out: Emitter,
                now: float) -> None:
        schema = RAW_SCHEMAS[logical]
        now_ms = int(now * 1000)
        for rec in records:
            try:
                _, record = self.codec.decode(rec.value, schema)
                one = self.ingestor.ingest(schema, record, rec.timestamp or now_ms)
            except (DecodeError, RejectRecord) as exc:
                self._dead_letter(out, logical, rec, str(exc), now_ms)
                continue
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("lean ingest: internal error on %s[%s]@%s", rec.topic, rec.partition, rec.offset)
                self._dead_letter(out, logical, rec, f"internal error: {exc!r}", now_ms)
                continue
            _merge(result, one)

    def _dead_letter(self, out: Emitter, logical: str, rec: ConsumerRecord, reason: str, now_ms: int) -> None:
        self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
        out.dead_letter(logical, rec.partition, rec.offset, reason, now_ms, rec.value, rec.key)


def _merge(into: IngestResult, one: IngestResult) -> None:
    into.signals += one.signals
    into.triage += one.triage
    into.commands += one.commands
    into.episodes += one.episodes
    for table, rows in one.rows.items():
        existing = into.rows.get(table)
        if existing is None:
            into.rows[table] = existing = []
        existing.extend(rows)  # type: ignore[attr-defined]  # the lists this function created
