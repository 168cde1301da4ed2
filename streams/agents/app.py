"""The Faust application: thin adapters from Kafka to the domain core.

Topology (two Kafka hops from a raw record to its case):

    raw feeds ──ingest agent (take batches)──▶ case.inputs (keyed by street) ──lifecycle agent──▶ cases,
    iot.readings, field.tracks ──lean batch consumer──┘                         case.events, dispatches,
    case.actions ──actions router──────────────────────┘                         sla.alerts, webhook.deliveries
    every derived topic ──ClickHouse sink (lean batch consumer, commits after insert)──▶ ClickHouse

All topics carry Avro single-object records; raw topics also accept JSON. Faust sees raw bytes
(``value_serializer="raw"``) so that a record that fails its schema reaches its dead-letter topic
with the original bytes instead of crashing the stream.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import faust
from faust.streams import current_event
from faust.types import EventT

from streams.bus.emit import Emitter
from streams.bus.codec import DecodeError, registry
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.bus.topics import (
    ACTIONS_REJECTED, CAMERA_ALERTS, CASE_ACTIONS, CASE_EVENTS, CASE_INPUTS, CASES, DEVICE_EPISODES, DISPATCHES,
    FIELD_REPORTS,
    HOTLINE_CALLS, INTERNAL_SCHEMAS, IOT_COMMANDS, RAW_SCHEMAS, REGISTRY_CHANGES, SIGNALS, SLA_ALERTS, TRIAGE,
    WEBHOOK_DELIVERIES, TopicNames,
)

log = logging.getLogger(__name__)

# Raw feeds handled per event by the Faust ingest agent; the high-volume feeds
# (iot.readings, field.tracks) go through the lean batch consumer in streams.agents.lean.
AGENT_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES)
SOURCE_OF_TOPIC = {
    HOTLINE_CALLS: "hotline", FIELD_REPORTS: "field", CAMERA_ALERTS: "camera", REGISTRY_CHANGES: "registry",
}
UNLOCATED_KEY = "unlocated"


def reason_label(reason: str) -> str:
    """A bounded metric label from an error message: its first clause, without quoted values."""
    head = reason.split(":", 1)[0]
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", head)[:48]


def street_of_case(case_id: str) -> str:
    """Case ids start with the street code (CONTRACTS.md), which is the partition key of case.inputs."""
    return case_id.split("-", 1)[0]


class Pipeline:
    """Builds the Faust app and the services around it from one Settings object."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics | None = None) -> None:
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self.codec = registry()
        self.metrics = metrics or PipelineMetrics()
        self.knowledge = Knowledge.load(settings.kb_path, settings.city_dir)
        self.ingestor = Ingestor(self.knowledge, settings.triage_confidence)
        self.schemas = {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}
        self._producer: Any = None
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            store=settings.table_store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=1,
            value_serializer="raw",
            key_serializer="raw",
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            web_port=settings.web_port,
            web_host="127.0.0.1",
            producer_linger_ms=5,
            broker_commit_every=1000,
            stream_buffer_maxsize=max(4096, settings.batch_size * 4),
            table_cleanup_interval=30.0,
            broker_session_timeout=settings.kafka_session_timeout_seconds,
            broker_request_timeout=max(settings.kafka_request_timeout_seconds,
                                       settings.kafka_session_timeout_seconds + 5),
            broker_heartbeat_interval=max(0.5, settings.kafka_session_timeout_seconds / 10),
        )
        self._define()

    # -- helpers --------------------------------------------------------------------------
    def topic(self, logical: str, **kw: Any) -> faust.TopicT:
        return self.app.topic(self.topics.name(logical), value_type=bytes, key_type=bytes, **kw)

    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None):
            producer = await self.derived_producer()
            return await producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.topics, self.schemas)

    async def derived_producer(self) -> Any:
        """A plain aiokafka producer for derived records: Faust's producer buffer hands records over
        one at a time (~3-4k/s here); the agents' bulk sends go several times faster directly.
        Table changelogs stay on Faust's producer. Started on first use, stopped with the app."""
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=5, acks="all",
                                        max_batch_size=256 * 1024)
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # -- topology -------------------------------------------------------------------------
    def _define(self) -> None:
        app, settings = self.app, self.settings
        raw_topic = self.app.topic(*[self.topics.name(t) for t in AGENT_RAW_TOPICS], value_type=bytes, key_type=bytes)
        case_inputs = self.topic(CASE_INPUTS, partitions=settings.topic_partitions)
        actions = self.topic(CASE_ACTIONS)
        self.case_inputs_topic = case_inputs

        # Case state: changelog-backed (RocksDB with table_store=rocksdb:// in production).
        self.cases_table = app.Table("cases", default=None, partitions=settings.topic_partitions,
                                     key_type=str, value_type=None)  # JSON values: plain case documents
        # source id -> case id, read by the actions router on every worker.
        self.sources_table = app.GlobalTable("case-sources", default=None, partitions=settings.topic_partitions,
                                             key_type=str, value_type=None)
        calendar = WorkCalendar(settings.holiday_override_file or DEFAULT_OVERRIDE_FILE)
        self.cases_view, self.sources_view = _TableView(self.cases_table), _TableView(self.sources_table)
        self.engine = CaseEngine(self.knowledge, self.cases_view, self.sources_view,
                                 calendar, auto_dispatch=settings.auto_dispatch)
        self._engine_stale = True

        @app.on_before_shutdown.connect
        async def _close(sender: Any, **kwargs: Any) -> None:
            await self.close()  # after the consumer stopped and the agents finished their batches

        @app.on_partitions_assigned.connect
        async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            self._engine_stale = True  # indexes are rebuilt from the table before the next input

        @app.agent(raw_topic, name="ingest")
        async def ingest(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
                await self.ingest_batch(batch)

        @app.agent(actions, name="route-actions")
        async def route_actions(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
                await self.route_action_batch(batch)

        @app.agent(case_inputs, name="lifecycle")
        async def lifecycle(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
                await self.lifecycle_batch(stream, batch)

        @app.timer(interval=settings.timer_tick_seconds)
        async def tick() -> None:
            """A tick per assigned case.inputs partition: timers fire inside stream processing, so their
            table writes land in the right changelog partition and survive restarts."""
            name = case_inputs.get_topic_name()
            now = int(time.time() * 1000)
            value = self.codec.encode("case_input", {"kind": "tick", "signal": None, "action": None, "tick_ms": now})
            for tp in app.assignor.assigned_actives():
                if tp.topic == name:
                    await app.producer.send(name, None, value, tp.partition, None, None)

    # -- adapters -------------------------------------------------------------------------
    async def ingest_batch(self, batch: list[EventT]) -> None:
        out = self.emitter()
        decoded: list[tuple[Any, str, dict]] = []
        for event in batch:
            msg = event.message
            logical = self.topics.logical(msg.topic)
            self.metrics.event_in(SOURCE_OF_TOPIC.get(logical, logical), logical, time.time())
            try:
                decoded.append((msg, logical, self.codec.decode(msg.value, RAW_SCHEMAS[logical])[1]))
            except DecodeError as exc:
                self._dead_letter(out, logical, msg, str(exc))
        self.ingestor.prepare([record for _, _, record in decoded])  # one classifier call per batch
        for msg, logical, record in decoded:
            ingest_ms = msg.timestamp and int(msg.timestamp * 1000) or int(time.time() * 1000)
            try:
                result = self.ingestor.ingest(RAW_SCHEMAS[logical], record, ingest_ms)
            except RejectRecord as exc:
                self._dead_letter(out, logical, msg, str(exc))
                continue
            except Exception as exc:  # a bug must not stop the city's feed: park the record, loudly
                log.exception("ingest: internal error on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                self._dead_letter(out, logical, msg, f"internal error: {exc!r}")
                continue
            self.emit_ingest_result(out, result)
        await out.flush()

    def emit_ingest_result(self, out: Emitter, result: Any) -> None:
        for signal in result.signals:
            self.metrics.classification_confidence.labels(source=signal.source).observe(signal.confidence)
            out.record(CASE_INPUTS, {"kind": "signal", "signal": json.dumps(signal.to_dict(), ensure_ascii=False),
                                     "action": None, "tick_ms": None}, key=signal.street_code or UNLOCATED_KEY)
        for item in result.triage:
            self.metrics.triage.labels(reason=reason_label(item.reason)).inc()
            out.record(TRIAGE, dict(item.__dict__), key=item.topic)
        for command in result.commands:
            out.record(IOT_COMMANDS, dict(command.__dict__), key=command.device_id)
        for episode in result.episodes:
            out.record(DEVICE_EPISODES, dict(episode), key=episode["device_id"])
        for table, rows in result.rows.items():
            out.rows(table, rows)

    def _dead_letter(self, out: Emitter, logical: str, msg: Any, reason: str) -> None:
        self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
        out.dead_letter(logical, msg.partition, msg.offset, reason, int(time.time() * 1000), msg.value, msg.key)

    async def route_action_batch(self, batch: list[EventT]) -> None:
        out = self.emitter()
        for event in batch:
            msg = event.message
            self.metrics.event_in("action", CASE_ACTIONS, time.time())
            try:
                _, action = self.codec.decode(msg.value, RAW_SCHEMAS[CASE_ACTIONS])
            except DecodeError as exc:
                self._dead_letter(out, CASE_ACTIONS, msg, str(exc))
                continue
            case_id = action.get("case_id") or await self.case_of_source(action.get("source_id") or "")
            if not case_id:
                out.record(ACTIONS_REJECTED, {
                    "action_id": action["action_id"], "case_id": None, "ts_ms": int(time.time() * 1000),
                    "reason": f"unknown source_id {action.get('source_id')!r}: no case holds that record yet",
                    "action": json.dumps(action, ensure_ascii=False)})
                continue
            action["case_id"] = case_id
            out.record(CASE_INPUTS, {"kind": "action", "signal": None, "tick_ms": None,
                                     "action": json.dumps(action, ensure_ascii=False)}, key=street_of_case(case_id))
        await out.flush()

    async def case_of_source(self, source_id: str, patience: float = 30.0) -> str | None:
        """The case holding a source record. Right after a (re)start the source index (a GlobalTable,
        recovered as standby partitions) may still be loading: an unknown id then waits for it
        rather than being rejected too early."""
        case_id = self.sources_table.get(source_id)
        deadline = time.monotonic() + patience
        while not case_id and not self.app.tables.standbys_ready and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            case_id = self.sources_table.get(source_id)
        return case_id

    async def lifecycle_batch(self, stream: faust.StreamT, batch: list[EventT]) -> None:
        if self._engine_stale:
            self.engine.rebuild()
            self._engine_stale = False
        out = self.emitter()
        latest_cases: dict[str, dict] = {}
        for event in batch:
            # Table writes go to the changelog partition of the *current* event: set it per event,
            # since take_events() leaves the last event of the batch as current.
            stream._set_current_event(event)
            msg = event.message
            try:
                _, item = self.codec.decode(msg.value, "case_input")
                if item["kind"] == "signal":
                    signal = Signal.from_dict(json.loads(item["signal"]))
                    outputs = self.engine.on_signal(signal, msg.partition)
                    if outputs.dispatches:
                        self.metrics.ingest_to_dispatch.observe(max(0.0, time.time() - signal.ingest_ms / 1000))
                elif item["kind"] == "action":
                    outputs = self.engine.on_action(json.loads(item["action"]), msg.partition)
                elif item["kind"] == "tick":
                    outputs = self.engine.on_tick(item["tick_ms"], msg.partition)
                else:
                    raise DecodeError(f"unknown case input kind {item['kind']!r}")
            except (DecodeError, ValueError, KeyError) as exc:
                self._dead_letter(out, CASE_INPUTS, msg, str(exc))
                continue
            except Exception as exc:  # a bug must not stop every case: park the input, loudly
                log.exception("lifecycle: internal error on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                self._dead_letter(out, CASE_INPUTS, msg, f"internal error: {exc!r}")
                continue
            self.emit_outputs(out, outputs, latest_cases)
        for row in latest_cases.values():  # the current state once per case and batch
            out.record(CASES, {"case_id": row["case_id"], "version": row["version"],
                               "state": json.dumps(row, ensure_ascii=False)}, key=row["case_id"])
        self.cases_view.flush_writes(stream)
        self.sources_view.flush_writes(stream)
        stream._set_current_event(batch[-1] if batch else None)
        await out.flush()

    def emit_outputs(self, out: Emitter, outputs: Any, latest_cases: dict[str, dict]) -> None:
        for row in outputs.cases:
            latest_cases[row["case_id"]] = row
        for row in outputs.case_transitions:
            if row.get("from_stage") == "" and row.get("to_stage") == "register":
                self.metrics.cases_opened.labels(origin=row.get("actor_kind") or "").inc()
            out.record(CASE_EVENTS, {"event_id": row["event_id"], "case_id": row["case_id"], "ts_ms": row["ts_ms"],
                                     "stage": row["to_stage"], "action": row["action"],
                                     "actor_kind": row.get("actor_kind"), "actor_id": row.get("actor_id"),
                                     "detail": json.dumps(row, ensure_ascii=False)}, key=row["case_id"])
        for row in outputs.dispatches:
            out.record(DISPATCHES, {k: row.get(k) for k in (
                "dispatch_id", "case_id", "ts_ms", "departments", "level", "category_code", "category_name",
                "deadline_ms", "street", "kb_version")}, key=row["case_id"])
            self.metrics.dispatches.labels(level=str(row["level"])).inc()
        for row in outputs.sla_alerts:
            out.record(SLA_ALERTS, {k: row.get(k) for k in (
                "alert_id", "case_id", "ts_ms", "stage", "light", "kind", "departments", "deadline_ms")},
                key=row["case_id"])
            if row["kind"] in ("sla_yellow", "sla_red"):
                self.metrics.sla_transitions.labels(light=row["light"], stage=row["stage"]).inc()
        for rejection in outputs.rejections:
            out.record(ACTIONS_REJECTED, rejection, key=rejection.get("case_id"))
        if outputs.merged:
            self.metrics.dedup_merges.inc(outputs.merged)
        for delivery in self.deliveries_for(outputs.notifications):
            out.record(WEBHOOK_DELIVERIES, delivery, key=delivery["case_id"])

    def open_case_counts(self) -> dict[tuple[str, str], int]:
        """(stage, light) -> open cases, for the gauge; reads the local table, O(cases) every few seconds."""
        counts: dict[tuple[str, str], int] = {}
        for doc in list(self.cases_table.values()):
            if not doc:
                continue
            row = CaseEngine.case_row(doc)
            if row["status"] in ("closed", "void"):
                continue
            key = (row["status"], row["light"])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def deliveries_for(self, notifications: list[dict]) -> list[dict]:
        if not notifications or self.webhook_config is None:
            return []
        from streams.sinks.webhooks import build_deliveries

        result: list[dict] = []
        for note in notifications:
            result.extend(build_deliveries(note, self.webhook_config))
        return result

    @property
    def webhook_config(self) -> Any:
        if not hasattr(self, "_webhook_config"):
            self._webhook_config = None
            if self.settings.webhooks_file:
                from streams.sinks.webhooks import load_config

                self._webhook_config = load_config(self.settings.webhooks_file)
        return self._webhook_config


class _TableView:
    """A plain MutableMapping over a Faust table (the core takes mappings, not Faust objects).

    Writes are held until ``flush_writes()`` at the end of a batch, so a case changed by fifty
    signals in one batch costs one changelog record, not fifty. Each held write remembers the
    event that made it, so its changelog record still lands in that event's partition."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[Any, Any]] = {}

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._pending:
            return self._pending[key][0]
        value = self._table.get(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._pending[key] = (value, current_event())

    def __delitem__(self, key: str) -> None:
        self.flush_writes(None)
        del self._table[key]

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self):
        return iter(list(dict.fromkeys([*self._table.keys(), *self._pending])))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def flush_writes(self, stream: Any) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        last = current_event()
        for key, (value, event) in pending.items():
            if stream is not None and event is not None:
                stream._set_current_event(event)
            self._table[key] = value
        if stream is not None:
            stream._set_current_event(last)
