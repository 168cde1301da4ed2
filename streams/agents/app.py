"""The Faust application: the topology only. Each agent hands its batches to an adapter
(streams.agents.ingest, .actions, .lifecycle) and flushes what the adapter queued.

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
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust
from faust.types import EventT

from streams.agents.actions import ActionRouter, source_index_lookup
from streams.agents.ingest import IngestAdapter
from streams.agents.lifecycle import LifecycleAdapter, WebhookFanout, open_case_counts, street_partitions
from streams.agents.tables import TableView, focus
from streams.bus import clients
from streams.bus.codec import registry
from streams.bus.delivery import deliver_until_acked
from streams.bus.emit import Emitter
from streams.bus.records import Inbound, tick_input
from streams.bus.rules import InputRules
from streams.bus.topics import (
    CAMERA_ALERTS,
    CASE_ACTIONS,
    CASE_INPUTS,
    CASES_TABLE,
    FIELD_REPORTS,
    HOTLINE_CALLS,
    INTERNAL_SCHEMAS,
    OPEN311_REQUESTS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    SOURCES_TABLE,
    TRIAGE_TABLE,
    ZERO_REPORTS_TABLE,
    TopicNames,
)
from streams.core.cases.engine import CaseEngine
from streams.core.cases.model import CaseDoc
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.field import ZeroReportBook
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.faults import crash_point
from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

# Raw feeds handled by the Faust ingest agent; the high-volume feeds
# (iot.readings, field.tracks) go through the lean batch consumer in streams.agents.lean.
AGENT_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES, OPEN311_REQUESTS)


def inbound(event: EventT) -> Inbound:
    """A Faust event as the adapters read it (Faust timestamps are epoch seconds)."""
    msg = event.message
    return Inbound(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000) if msg.timestamp else None,
                   msg.key, msg.value)


class Pipeline:
    """Builds the Faust app and the services around it from one Settings object."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics | None = None) -> None:
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self.codec = registry()
        self.metrics = metrics or PipelineMetrics()
        self.knowledge = Knowledge.load(settings.kb_path, settings.city_dir)
        from streams.security import dlq_sealer, pseudonymizer

        self.pseudonyms = pseudonymizer(settings)   # callers' numbers → keyed pseudonyms
        self.sealer = dlq_sealer(settings)          # dead-letter originals → Fernet tokens
        self.ingestor = Ingestor(self.knowledge, settings.triage_confidence, pseudonyms=self.pseudonyms)
        self.schemas = {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}
        self.rules = InputRules.from_settings(settings)
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self.app = faust.App(
            settings.app_id,
            **clients.faust_app(settings),
            store=settings.table_store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            value_serializer="raw",
            key_serializer="raw",
            web_enabled=True,
            web_port=settings.web_port,
            web_host=settings.web_host,
            web_bind=settings.web_host,   # 127.0.0.1 unless a setting opens it (docs/security.md)
            # Faust's built-in views would serve whole case documents (/table/cases/<id>/) and the
            # app's internals (/router/, /graph/, /stats/): off, only /wall/ and /health/ remain
            web_tables_enabled=False,
            web_router_enabled=False,
            web_graph_enabled=False,
            web_stats_enabled=False,
            stream_buffer_maxsize=max(4096, settings.batch_size * 4),
            table_cleanup_interval=30.0,
        )
        from streams.agents.health import Liveness

        self.liveness = Liveness(settings.health_stall_seconds)   # what /health/ reports
        # with case_path "lean" the case path runs on lean consumers (streams.agents.casepath) and this app only
        # hosts the services and the web views; "faust": the agents and tables below
        self.lean_lifecycle: Any = None
        self.triage_view: TableView[Any] | None = None
        if settings.case_path == "faust":
            self._define()
        self.ingest = IngestAdapter(self.ingestor, self.codec, self.metrics, self.topics, rules=self.rules,
                                    remember_triage=self._remember_triage if self.triage_view is not None else None)

    def _remember_triage(self, item: Any) -> None:
        """A triage record 人工分拨, kept (a GlobalTable: every worker's actions router reads it) so that the
        centre can make a case of it (from_triage)."""
        assert self.triage_view is not None
        self.triage_view[item.triage_id] = dict(item.__dict__)

    def topic(self, logical: str, **kw: Any) -> faust.TopicT:
        return self.app.topic(self.topics.name(logical), value_type=bytes, key_type=bytes, **kw)

    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            producer = await self.derived_producer()
            return await producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.topics, self.schemas, sealer=self.sealer,
                       max_message_bytes=self.settings.kafka_max_message_bytes)

    async def derived_producer(self) -> Any:
        """A plain aiokafka producer for derived records: Faust's producer buffer hands records over
        one at a time (~3-4k/s here); the agents' bulk sends go several times faster directly.
        Table changelogs stay on Faust's producer. Started on first use (once: the agents ask for it at
        the same time, and a second producer dropped mid-send would lose what it held), stopped with the app."""
        async with self._producer_lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(**clients.derived_producer(self.settings))
                try:
                    await producer.start()
                except BaseException:  # broker away: the next send tries again with a fresh one
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def renew_producer(self) -> None:
        """Replace the derived producer (its idempotence state lost in an outage; see deliver_until_acked)."""
        async with self._producer_lock:
            old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), timeout=10)
            except Exception as exc:
                log.warning("the replaced producer did not stop cleanly: %r", exc)

    async def deliver(self, out: Emitter, label: str) -> None:
        """Until every output is acknowledged (an outage waits here; Faust's consumer keeps polling)."""
        await deliver_until_acked(out, label, lambda: bool(self.app.should_stop), self.renew_producer)

    async def state_written(self, *views: TableView[Any]) -> None:
        """Until the broker holds every changelog record the views wrote (TableView.written): Faust's
        commit flushes its producer only half-way, so a batch's offsets could otherwise be committed
        before its state is durable, and a crash would restart past inputs whose state was lost."""
        for view in views:
            await view.written(lambda: bool(self.app.should_stop))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def batches(self, stream: faust.StreamT) -> AsyncIterator[Sequence[EventT]]:
        """Batches of up to batch_size events, or what came within batch_seconds (``take_events`` is
        on faust.Stream, not on the StreamT interface the agents are typed with)."""
        return cast(faust.Stream, stream).take_events(self.settings.batch_size, within=self.settings.batch_seconds)

    def open_case_counts(self) -> dict[tuple[str, str], int]:
        """(stage, light) -> open cases, for the gauge: kept as cases change on the lean path; the Faust
        path reads its local table (O(cases)) every few seconds."""
        if self.lean_lifecycle is not None:
            return dict(self.lean_lifecycle.open_case_counts())
        if self.settings.case_path != "faust":
            return {}
        return open_case_counts(list(self.cases_table.values()))

    def _define(self) -> None:
        app, settings = self.app, self.settings
        raw_topic = self.app.topic(*[self.topics.name(t) for t in AGENT_RAW_TOPICS], value_type=bytes, key_type=bytes)
        case_inputs = self.topic(CASE_INPUTS, partitions=settings.topic_partitions)
        actions = self.topic(CASE_ACTIONS)
        self.case_inputs_topic = case_inputs

        # Case state: changelog-backed (RocksDB with table_store=rocksdb:// in production); the changelogs
        # get the settings' replication (Faust) and min.insync.replicas (here), compacted (Faust's default).
        state = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        self.cases_table = app.Table(CASES_TABLE, default=None, partitions=settings.topic_partitions,
                                     key_type=str, value_type=None,  # JSON values: plain case documents
                                     extra_topic_configs=state)
        # source id -> case id, read by the actions router on every worker.
        self.sources_table = app.GlobalTable(SOURCES_TABLE, default=None, partitions=settings.topic_partitions,
                                             key_type=str, value_type=None, extra_topic_configs=state)
        # residential stations' daily reports 零报告 (station id -> days reported / alerted): a station's
        # reports and its deadline meet in the case.inputs partition of its street
        self.zero_reports_table = app.Table(ZERO_REPORTS_TABLE, default=None, partitions=settings.topic_partitions,
                                            key_type=str, value_type=None, extra_topic_configs=state)
        self.cases_view: TableView[CaseDoc] = TableView(self.cases_table)
        self.sources_view: TableView[str] = TableView(self.sources_table)
        self.zero_reports_view: TableView[Any] = TableView(self.zero_reports_table)
        calendar = WorkCalendar(settings.holiday_override_file or DEFAULT_OVERRIDE_FILE)
        self.engine = CaseEngine(self.knowledge, self.cases_view, self.sources_view,
                                 calendar, auto_dispatch=settings.auto_dispatch)
        ttl = settings.closed_case_retention_hours
        self.zero_reports = ZeroReportBook(self.knowledge.field, self.zero_reports_view, settings.zero_report_deadline,
                                           calendar.is_workday, self.knowledge.city.unit_of)
        self.lifecycle = LifecycleAdapter(self.engine, self.codec, self.metrics, self.topics,
                                          deliveries=WebhookFanout(settings.webhooks_file),
                                          closed_case_ttl_ms=int(ttl * 3_600_000) if ttl > 0 else None,
                                          zero_reports=self.zero_reports,
                                          owns=street_partitions(settings.topic_partitions),
                                          journals=(self.cases_view, self.sources_view, self.zero_reports_view))
        # triage id -> triage record 人工分拨, read by the actions router on every worker (from_triage). Its
        # changelog partition comes from the key (use_partitioner): the ingest agent writes it after a whole
        # batch, outside any one event, and every worker reads all of a GlobalTable anyway.
        self.triage_table = app.GlobalTable(TRIAGE_TABLE, default=None, partitions=settings.topic_partitions,
                                            key_type=str, value_type=None, use_partitioner=True,
                                            extra_topic_configs=state)
        triage_view: TableView[Any] = TableView(self.triage_table)
        self.triage_view = triage_view
        triage_lookup = source_index_lookup(self.triage_table, lambda: bool(self.app.tables.standbys_ready))

        async def triage_of(triage_id: str) -> Any:
            return self.triage_table.get(triage_id) if await triage_lookup(triage_id) else None

        self.actions = ActionRouter(self.codec, self.metrics, self.topics, source_index_lookup(
            self.sources_table, lambda: bool(self.app.tables.standbys_ready)), triage_of=triage_of,
            ingestor=self.ingestor)
        self.actions.rules = self.rules

        # mode's SignalHandlerT (a Callable built from mypy_extensions' VarArg/NamedArg) rejects every handler,
        # even one declared exactly (sender, *args, signal, **kwargs): hence the narrow ignores below.
        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close(sender: Any, **kwargs: Any) -> None:
            await self.close()  # after the consumer stopped and the agents finished their batches

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            self.lifecycle.mark_stale()  # indexes are rebuilt from the table before the next input

        # Every agent: the adapter stages each input's outputs (or its dead letter), the outputs are sent
        # until acknowledged, and only then does Faust acknowledge the batch (at-least-once end to end).
        @app.agent(raw_topic, name="ingest")
        async def ingest(stream: faust.StreamT) -> None:
            async for batch in self.batches(stream):
                out = self.emitter()
                await self.ingest.handle([inbound(e) for e in batch], out)
                await self.deliver(out, "ingest")
                triage_view.flush_writes(cast(faust.Stream, stream))   # state after its outputs
                await self.state_written(triage_view)
                crash_point("ingest.outputs_sent")

        @app.agent(actions, name="route-actions")
        async def route_actions(stream: faust.StreamT) -> None:
            async for batch in self.batches(stream):
                out = self.emitter()
                await self.actions.handle([inbound(e) for e in batch], out)
                await self.deliver(out, "route-actions")

        @app.agent(case_inputs, name="lifecycle")
        async def lifecycle(stream: faust.StreamT) -> None:
            """Outputs before state: a batch's outputs are sent and acknowledged first, the case state (the
            tables' changelogs) is written after. A crash between the two replays the batch from the old
            state into the same outputs with the same ids, which every consumer keeps once; the other order
            could store a state that already holds a signal whose dispatch was never sent (docs/reliability.md)."""
            async for batch in self.batches(stream):
                out = self.emitter()

                def point_at(i: int, events: Sequence[EventT] = batch) -> None:
                    focus(events[i])   # table writes go to the changelog partition of that input

                await self.lifecycle.handle([inbound(e) for e in batch], out, focus=point_at)
                self.liveness.beat("lifecycle")   # ticks arrive every timer_tick_seconds: the consumer lives
                await self.deliver(out, "lifecycle")
                crash_point("lifecycle.outputs_sent")
                self.cases_view.flush_writes()
                self.sources_view.flush_writes()
                self.zero_reports_view.flush_writes()
                # acknowledged before Faust may acknowledge the batch: its commit does not wait for them
                await self.state_written(self.cases_view, self.sources_view, self.zero_reports_view)
                crash_point("lifecycle.state_written")

        @app.timer(interval=settings.timer_tick_seconds)
        async def tick() -> None:
            """A tick per assigned case.inputs partition: timers fire inside stream processing, so their
            table writes land in the right changelog partition and survive restarts. A tick that cannot be
            sent (broker away) is skipped: the next one fires whatever is due by then."""
            name = case_inputs.get_topic_name()
            value = self.codec.encode("case_input", tick_input(self.lifecycle.now_ms()).value)
            try:
                for tp in app.assignor.assigned_actives():
                    if tp.topic == name:
                        await app.producer.send(name, None, value, tp.partition, None, None)
            except Exception as exc:
                log.warning("clock tick not sent (%s); the next tick catches up", exc)
