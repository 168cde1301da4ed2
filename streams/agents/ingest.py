"""The ingest adapter: raw feed records → the Ingestor → case.inputs, triage.manual 人工分拨,
iot.commands and store rows. One adapter for both readers of raw feeds: the Faust ingest agent
(hotline, field reports, camera, registry) and the lean batch consumer (IoT readings, GPS tracks)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from streams.agents.adapter import Adapter, Clock, reason_label
from streams.bus import records
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.emit import Emitter
from streams.bus.records import Inbound
from streams.bus.rules import DEFAULT_RULES, InputRules
from streams.bus.topics import (
    CAMERA_ALERTS,
    FIELD_REPORTS,
    FIELD_TRACKS,
    HOTLINE_CALLS,
    IOT_READINGS,
    OPEN311_REQUESTS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    TopicNames,
)
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.model import IngestResult, Triage
from streams.metrics import PipelineMetrics

log = logging.getLogger(__name__)

# The `source` label of the events-in metric, by raw topic.
SOURCE_OF_TOPIC = {
    HOTLINE_CALLS: "hotline", FIELD_REPORTS: "field", CAMERA_ALERTS: "camera", REGISTRY_CHANGES: "registry",
    IOT_READINGS: "iot", FIELD_TRACKS: "field", OPEN311_REQUESTS: "open311",
}


class IngestAdapter(Adapter):
    """Every input yields its outputs or exactly one dead letter: a record that fails its schema or
    that the ingest refuses (RejectRecord) is parked with its reason; a bug is parked too, loudly,
    so that it never stops the city's feed.

    ``classify_batches``: decode the whole batch first and classify its free texts in one call (the
    Faust agent's text feeds); off, each record is decoded and ingested in turn, which keeps fewer
    objects alive per batch (the lean consumer's IoT readings and GPS fixes have no text)."""

    def __init__(self, ingestor: Ingestor, codec: SchemaRegistry, metrics: PipelineMetrics, names: TopicNames,
                 clock: Clock = time.time, classify_batches: bool = True, rules: InputRules = DEFAULT_RULES,
                 remember_triage: Callable[[Triage], None] | None = None) -> None:
        super().__init__(codec, metrics, names, clock, rules)
        self.ingestor = ingestor
        self.classify_batches = classify_batches
        self.remember_triage = remember_triage   # keeps triage records for the centre's from_triage action

    async def handle(self, batch: Sequence[Inbound], out: Emitter) -> None:
        if not self.classify_batches:
            for inbound in batch:
                logical = self._count(inbound)
                out.begin(self.input_record(inbound, logical))
                record, reason = self._decode(logical, inbound)
                if record is None:
                    self.park(out, logical, reason)
                else:
                    self._ingest(out, logical, inbound, record)
            out.end()
            return
        decoded: list[tuple[Inbound, str, dict[str, Any] | None, str]] = []
        for inbound in batch:
            logical = self._count(inbound)
            decoded.append((inbound, logical, *self._decode(logical, inbound)))
        try:
            self.ingestor.prepare([record for _, _, record, _ in decoded if record is not None])  # one classifier call
        except Exception:  # an optimisation only: each text is classified on its own below
            log.exception("ingest: classifying the batch at once failed")
        for inbound, logical, record, reason in decoded:
            out.begin(self.input_record(inbound, logical))
            if record is None:
                self.park(out, logical, reason)
            else:
                self._ingest(out, logical, inbound, record)
        out.end()

    def _count(self, inbound: Inbound) -> str:
        logical = self.names.logical(inbound.topic)
        self.metrics.event_in(SOURCE_OF_TOPIC.get(logical, logical), logical, self.clock())
        return logical

    def _decode(self, logical: str, inbound: Inbound) -> tuple[dict[str, Any] | None, str]:
        """(record, "") or (None, why not): schema and input rules, the event-time window measured
        against the record's Kafka timestamp."""
        try:
            return self.codec.decode(inbound.value, RAW_SCHEMAS[logical], self.rules, inbound.timestamp_ms)[1], ""
        except DecodeError as exc:
            return None, str(exc)
        except Exception as exc:  # a bug must not stop the feed: park the record, loudly
            log.exception("ingest: internal error decoding %s[%s]@%s", inbound.topic, inbound.partition, inbound.offset)
            return None, f"internal error: {exc!r}"

    def _ingest(self, out: Emitter, logical: str, inbound: Inbound, record: dict[str, Any]) -> None:
        try:
            result = self.ingestor.ingest(RAW_SCHEMAS[logical], record, inbound.timestamp_ms or self.now_ms())
            self.emit_result(out, result)
        except RejectRecord as exc:
            self.park(out, logical, str(exc))
        except Exception as exc:  # a bug, or an output that cannot be sent: park the record, never stop the feed
            log.warning("ingest: %s[%s]@%s parked: %r", inbound.topic, inbound.partition, inbound.offset, exc)
            self.park(out, logical, f"internal error: {exc!r}")

    def emit_result(self, out: Emitter, result: IngestResult) -> None:
        for signal in result.signals:
            self.metrics.classification_confidence.labels(source=signal.source).observe(signal.confidence)
        for item in result.triage:
            self.metrics.triage.labels(reason=reason_label(item.reason)).inc()
            if self.remember_triage is not None:
                self.remember_triage(item)
        if result.signals or result.triage or result.commands or result.episodes or result.station_reports:
            out.emit(records.ingest_records(result))
        for table, rows in result.rows.items():
            out.rows(table, rows)
