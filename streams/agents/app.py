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
import weakref
from typing import Any

import faust
from faust.streams import current_event
from faust.types import EventT

from streams.bus.codec import DecodeError, registry
from streams.bus.delivery import deliver_until_acked
from streams.bus.emit import Emitter, InputRecord
from streams.bus.rules import InputRules
from streams.bus.topics import (
    ACTIONS_REJECTED,
    CAMERA_ALERTS,
    CASE_ACTIONS,
    CASE_EVENTS,
    CASE_INPUTS,
    CASES,
    CASES_TABLE,
    DISPATCHES,
    FIELD_REPORTS,
    HOTLINE_CALLS,
    INTERNAL_SCHEMAS,
    IOT_COMMANDS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    SLA_ALERTS,
    SOURCES_TABLE,
    TRIAGE,
    WEBHOOK_DELIVERIES,
    TopicNames,
)
from streams.core.cases.engine import CaseEngine
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

# Raw feeds handled per event by the Faust ingest agent; the high-volume feeds
# (iot.readings, field.tracks) go through the lean batch consumer in streams.agents.lean.
AGENT_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES)
SOURCE_OF_TOPIC = {
    HOTLINE_CALLS: "hotline", FIELD_REPORTS: "field", CAMERA_ALERTS: "camera", REGISTRY_CHANGES: "registry",
}
UNLOCATED_KEY = "unlocated"


def _kafka_ms(msg: Any) -> int | None:
    """The Kafka timestamp of a Faust message in epoch ms (Faust gives seconds)."""
    return int(msg.timestamp * 1000) if msg.timestamp else None


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
        self.rules = InputRules.from_settings(settings)
        self.schemas = {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            store=settings.table_store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
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

        return Emitter(send, self.codec, self.topics, self.schemas, self.settings.kafka_max_message_bytes)

    async def derived_producer(self) -> Any:
        """A plain aiokafka producer for derived records: Faust's producer buffer hands records over
        one at a time (~3-4k/s here); the agents' bulk sends go several times faster directly.
        Table changelogs stay on Faust's producer. Started on first use (once: the agents ask for it
        at the same time, and a second producer dropped mid-send would lose what it held), stopped
        with the app."""
        async with self._producer_lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=5,
                                            acks="all", enable_idempotence=True, max_batch_size=256 * 1024,
                                            max_request_size=self.settings.kafka_max_message_bytes + 64 * 1024)
                try:
                    await producer.start()
                except BaseException:  # broker away: the next send tries again with a fresh one
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def renew_producer(self) -> None:
        """Replace the derived producer (see deliver_until_acked); what it held is sent again by the caller."""
        async with self._producer_lock:
            old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), timeout=10)
            except Exception as exc:
                log.warning("the replaced producer did not stop cleanly: %r", exc)

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
        state_topic_configs = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        self.cases_table = app.Table(CASES_TABLE, default=None, partitions=settings.topic_partitions,
                                     key_type=str, value_type=None,  # JSON values: plain case documents
                                     extra_topic_configs=state_topic_configs)
        # source id -> case id, read by the actions router on every worker.
        self.sources_table = app.GlobalTable(SOURCES_TABLE, default=None, partitions=settings.topic_partitions,
                                             key_type=str, value_type=None, extra_topic_configs=state_topic_configs)
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
            table writes land in the right changelog partition and survive restarts. A tick that cannot
            be sent (broker away) is skipped: the next one fires whatever is due by then."""
            name = case_inputs.get_topic_name()
            now = int(time.time() * 1000)
            value = self.codec.encode("case_input", {"kind": "tick", "signal": None, "action": None, "tick_ms": now})
            try:
                for tp in app.assignor.assigned_actives():
                    if tp.topic == name:
                        await app.producer.send(name, None, value, tp.partition, None, None)
            except Exception as exc:
                log.warning("clock tick not sent (%s); the next tick catches up", exc)

    # -- adapters -------------------------------------------------------------------------
    # Every adapter runs each input record inside ``out.begin(...)``: its outputs are staged, and a
    # failure of any step (decode, validate, process, encode) rolls them back and dead-letters the
    # record (``out.park``). The batch's outputs are then sent until acknowledged (an outage waits
    # here; Faust keeps polling for us), and only then is the batch acknowledged.
    def _input(self, msg: Any, logical: str) -> InputRecord:
        return InputRecord(logical, msg.partition, msg.offset, _kafka_ms(msg) or 0, msg.value, msg.key)

    def _park(self, out: Emitter, logical: str, reason: str) -> None:
        self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
        out.park(reason)

    async def ingest_batch(self, batch: list[EventT]) -> None:
        out = self.emitter()
        decoded: list[tuple[Any, str, dict | None, str]] = []
        for event in batch:
            msg = event.message
            logical = self.topics.logical(msg.topic)
            self.metrics.event_in(SOURCE_OF_TOPIC.get(logical, logical), logical, time.time())
            try:
                record = self.codec.decode(msg.value, RAW_SCHEMAS[logical], self.rules, _kafka_ms(msg))[1]
                decoded.append((msg, logical, record, ""))
            except Exception as exc:  # DecodeError (the reason), or anything else the bytes provoke
                why = str(exc) if isinstance(exc, DecodeError) else f"undecodable: {exc!r}"
                decoded.append((msg, logical, None, why))
        try:
            self.ingestor.prepare([record for _, _, record, _ in decoded if record is not None])
        except Exception:  # an optimisation only: each record is classified on its own below
            log.exception("ingest: batch classification failed")
        for msg, logical, record, reason in decoded:
            out.begin(self._input(msg, logical))
            if record is None:
                self._park(out, logical, reason)
                continue
            try:
                result = self.ingestor.ingest(RAW_SCHEMAS[logical], record, _kafka_ms(msg) or int(time.time() * 1000))
                self.emit_ingest_result(out, result)
            except RejectRecord as exc:
                self._park(out, logical, str(exc))
            except Exception as exc:  # a bug or an unsendable output must not stop the feed: park the record
                log.warning("ingest: %s[%s]@%s parked: %r", msg.topic, msg.partition, msg.offset, exc)
                self._park(out, logical, f"internal error: {exc!r}")
        out.end()
        await deliver_until_acked(out, "ingest", lambda: self.app.should_stop, self.renew_producer)
        crash_point("ingest.outputs_sent")

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
        for table, rows in result.rows.items():
            out.rows(table, rows)

    async def route_action_batch(self, batch: list[EventT]) -> None:
        out = self.emitter()
        for event in batch:
            msg = event.message
            self.metrics.event_in("action", CASE_ACTIONS, time.time())
            out.begin(self._input(msg, CASE_ACTIONS))
            try:
                _, action = self.codec.decode(msg.value, RAW_SCHEMAS[CASE_ACTIONS], self.rules, _kafka_ms(msg))
                case_id = action.get("case_id") or await self.case_of_source(action.get("source_id") or "")
                if not case_id:
                    out.record(ACTIONS_REJECTED, {
                        "action_id": action["action_id"], "case_id": None, "ts_ms": _kafka_ms(msg) or 0,
                        "reason": f"unknown source_id {action.get('source_id')!r}: no case holds that record yet",
                        "action": json.dumps(action, ensure_ascii=False)})
                    continue
                action["case_id"] = case_id
                out.record(CASE_INPUTS, {"kind": "action", "signal": None, "tick_ms": None,
                                         "action": json.dumps(action, ensure_ascii=False)}, key=street_of_case(case_id))
            except Exception as exc:
                self._park(out, CASE_ACTIONS, str(exc) if isinstance(exc, DecodeError) else f"internal error: {exc!r}")
        out.end()
        await deliver_until_acked(out, "route-actions", lambda: self.app.should_stop, self.renew_producer)

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

    def apply_case_input(self, msg: Any) -> Any:
        _, item = self.codec.decode(msg.value, "case_input")
        if item["kind"] == "signal":
            signal = Signal.from_dict(json.loads(item["signal"]))
            outputs = self.engine.on_signal(signal, msg.partition)
            if outputs.dispatches:
                self.metrics.ingest_to_dispatch.observe(max(0.0, time.time() - signal.ingest_ms / 1000))
            return outputs
        if item["kind"] == "action":
            return self.engine.on_action(json.loads(item["action"]), msg.partition)
        if item["kind"] == "tick":
            return self.engine.on_tick(item["tick_ms"], msg.partition)
        raise DecodeError(f"unknown case input kind {item['kind']!r}")

    async def lifecycle_batch(self, stream: faust.StreamT, batch: list[EventT]) -> None:
        """Outputs before state: the batch's outputs are sent and acknowledged first, the case state
        (the table's changelog) is written after. A crash between the two replays the batch from the
        old state into the same outputs with the same ids (duplicates that every consumer keeps once);
        the other order could store a state that already holds a signal whose dispatch was never sent."""
        if self._engine_stale:
            self.engine.rebuild()
            self._engine_stale = False
        views = (self.cases_view, self.sources_view)
        out = self.emitter()
        latest_cases: dict[str, dict] = {}
        for event in batch:
            # Table writes go to the changelog partition of the *current* event: point it at each one
            focus(event)
            msg = event.message
            out.begin(self._input(msg, CASE_INPUTS))
            for view in views:
                view.mark()
            try:
                outputs = self.apply_case_input(msg)
                changed: dict[str, dict] = {}
                self.emit_outputs(out, outputs, changed)
            except Exception as exc:  # the input's fault, or a bug: undo its state, park it, go on
                if not isinstance(exc, (DecodeError, ValueError, KeyError)):
                    log.exception("lifecycle: internal error on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                if any([view.undo() for view in views]):
                    self.engine.rebuild()  # its indexes saw the undone change
                known = isinstance(exc, (DecodeError, ValueError, KeyError))
                reason = str(exc) if known else f"internal error: {exc!r}"
                self._park(out, CASE_INPUTS, reason)
                continue
            latest_cases.update(changed)
        out.end()
        for row in latest_cases.values():  # the current state once per case and batch
            try:
                out.record(CASES, {"case_id": row["case_id"], "version": row["version"],
                                   "state": json.dumps(row, ensure_ascii=False)}, key=row["case_id"])
            except Exception:  # its next change writes it again; the case itself is in the table
                log.exception("lifecycle: the state row of case %s cannot be sent", row.get("case_id"))
        await deliver_until_acked(out, "lifecycle", lambda: self.app.should_stop, self.renew_producer)
        crash_point("lifecycle.outputs_sent")
        self.cases_view.flush_writes(stream)
        self.sources_view.flush_writes(stream)
        crash_point("lifecycle.state_written")

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


def focus(event: EventT | None) -> None:
    """Point Faust's table writes (this task's current event) at ``event``'s partition.

    Only the task's context variable, never ``stream.current_event``: ``take_events()`` reads that
    attribute when it buffers the *next* event while the agent still holds the batch, and an old
    event put there makes it record the old event in place of the new one -- the new record would
    be acknowledged without ever being processed."""
    from faust.streams import _current_event

    _current_event.set(weakref.ref(event) if event is not None else None)


class _TableView:
    """A plain MutableMapping over a Faust table (the core takes mappings, not Faust objects).

    Writes are held until ``flush_writes()`` at the end of a batch, so a case changed by fifty
    signals in one batch costs one changelog record, not fifty. Each held write remembers the
    event that made it, so its changelog record still lands in that event's partition."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[Any, Any]] = {}
        self._journal: dict[str, tuple[Any, Any] | None] | None = None

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
        if self._journal is not None and key not in self._journal:
            self._journal[key] = self._pending.get(key)
        self._pending[key] = (value, current_event())

    def mark(self) -> None:
        """Start remembering what the next writes replace, so that :meth:`undo` can take them back."""
        self._journal = {}

    def undo(self) -> bool:
        """Take back the writes since :meth:`mark` (an input that failed half-way); True if there were any."""
        journal, self._journal = self._journal or {}, None
        for key, previous in journal.items():
            if previous is None:
                self._pending.pop(key, None)
            else:
                self._pending[key] = previous
        return bool(journal)

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
            if event is not None:
                focus(event)
            self._table[key] = value
        focus(last)
