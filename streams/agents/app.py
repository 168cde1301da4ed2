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

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust
from faust.types import EventT

from streams.agents.actions import ActionRouter, source_index_lookup
from streams.agents.ingest import IngestAdapter
from streams.agents.lifecycle import LifecycleAdapter, WebhookFanout, open_case_counts, street_partitions
from streams.agents.tables import TableView
from streams.bus import clients
from streams.bus.codec import registry
from streams.bus.emit import Emitter
from streams.bus.records import Inbound, tick_input
from streams.bus.topics import (
    CAMERA_ALERTS,
    CASE_ACTIONS,
    CASE_INPUTS,
    FIELD_REPORTS,
    HOTLINE_CALLS,
    INTERNAL_SCHEMAS,
    OPEN311_REQUESTS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    TopicNames,
)
from streams.core.cases.engine import CaseEngine
from streams.core.cases.model import CaseDoc
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.field import ZeroReportBook
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.metrics import PipelineMetrics
from streams.settings import Settings

# Raw feeds handled by the Faust ingest agent; the high-volume feeds
# (iot.readings, field.tracks) go through the lean batch consumer in streams.agents.lean.
AGENT_RAW_TOPICS = (HOTLINE_CALLS, FIELD_REPORTS, CAMERA_ALERTS, REGISTRY_CHANGES, OPEN311_REQUESTS)


def inbound(event: EventT) -> Inbound:
    """A Faust event as the adapters read it (Faust timestamps are epoch seconds)."""
    msg = event.message
    return Inbound(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000) if msg.timestamp else None,
                   msg.key, msg.value if msg.value is not None else b"")


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
        self._producer: Any = None
        self.app = faust.App(
            settings.app_id,
            **clients.faust_app(settings),
            store=settings.table_store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=1,
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
        self._define()
        self.ingest = IngestAdapter(self.ingestor, self.codec, self.metrics, self.topics,
                                    remember_triage=self._remember_triage)

    def _remember_triage(self, item: Any) -> None:
        """A triage record 人工分拨, kept (a GlobalTable: every worker's actions router reads it) so that the
        centre can make a case of it (from_triage)."""
        self.triage_view[item.triage_id] = dict(item.__dict__)

    def topic(self, logical: str, **kw: Any) -> faust.TopicT:
        return self.app.topic(self.topics.name(logical), value_type=bytes, key_type=bytes, **kw)

    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            producer = await self.derived_producer()
            return await producer.send(topic, value, key=key, partition=partition)

        return Emitter(send, self.codec, self.topics, self.schemas, sealer=self.sealer)

    async def derived_producer(self) -> Any:
        """A plain aiokafka producer for derived records: Faust's producer buffer hands records over
        one at a time (~3-4k/s here); the agents' bulk sends go several times faster directly.
        Table changelogs stay on Faust's producer. Started on first use, stopped with the app."""
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(**clients.derived_producer(self.settings))
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def batches(self, stream: faust.StreamT) -> AsyncIterator[Sequence[EventT]]:
        """Batches of up to batch_size events, or what came within batch_seconds (``take_events`` is
        on faust.Stream, not on the StreamT interface the agents are typed with)."""
        return cast(faust.Stream, stream).take_events(self.settings.batch_size, within=self.settings.batch_seconds)

    def open_case_counts(self) -> dict[tuple[str, str], int]:
        """(stage, light) -> open cases, for the gauge; reads the local table every few seconds."""
        return open_case_counts(list(self.cases_table.values()))

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
        # residential stations' daily reports 零报告 (station id -> days reported / alerted): a station's
        # reports and its deadline meet in the case.inputs partition of its street
        self.zero_reports_table = app.Table("zero-reports", default=None, partitions=settings.topic_partitions,
                                            key_type=str, value_type=None)
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
                                          owns=street_partitions(settings.topic_partitions))
        # triage id -> triage record 人工分拨, read by the actions router on every worker (from_triage)
        self.triage_table = app.GlobalTable("triage-records", default=None, partitions=settings.topic_partitions,
                                            key_type=str, value_type=None)
        self.triage_view: TableView[Any] = TableView(self.triage_table)
        triage_lookup = source_index_lookup(self.triage_table, lambda: bool(self.app.tables.standbys_ready))

        async def triage_of(triage_id: str) -> Any:
            return self.triage_table.get(triage_id) if await triage_lookup(triage_id) else None

        self.actions = ActionRouter(self.codec, self.metrics, self.topics, source_index_lookup(
            self.sources_table, lambda: bool(self.app.tables.standbys_ready)), triage_of=triage_of,
            ingestor=self.ingestor)

        # mode's SignalHandlerT (a Callable built from mypy_extensions' VarArg/NamedArg) rejects every handler,
        # even one declared exactly (sender, *args, signal, **kwargs): hence the narrow ignores below.
        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close(sender: Any, **kwargs: Any) -> None:
            await self.close()  # after the consumer stopped and the agents finished their batches

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            self.lifecycle.mark_stale()  # indexes are rebuilt from the table before the next input

        @app.agent(raw_topic, name="ingest")
        async def ingest(stream: faust.StreamT) -> None:
            async for batch in self.batches(stream):
                out = self.emitter()
                await self.ingest.handle([inbound(e) for e in batch], out)
                self.triage_view.flush_writes(cast(faust.Stream, stream))
                await out.flush()

        @app.agent(actions, name="route-actions")
        async def route_actions(stream: faust.StreamT) -> None:
            async for batch in self.batches(stream):
                out = self.emitter()
                await self.actions.handle([inbound(e) for e in batch], out)
                await out.flush()

        @app.agent(case_inputs, name="lifecycle")
        async def lifecycle(stream: faust.StreamT) -> None:
            events_stream = cast(faust.Stream, stream)
            async for batch in self.batches(stream):
                out = self.emitter()

                def focus(i: int, events: Sequence[EventT] = batch) -> None:
                    # Table writes go to the changelog partition of the *current* event: set it per event,
                    # since take_events() leaves the last event of the batch as current.
                    events_stream._set_current_event(events[i])

                await self.lifecycle.handle([inbound(e) for e in batch], out, focus=focus)
                self.liveness.beat("lifecycle")   # ticks arrive every timer_tick_seconds: the consumer lives
                self.cases_view.flush_writes(events_stream)
                self.sources_view.flush_writes(events_stream)
                self.zero_reports_view.flush_writes(events_stream)
                events_stream._set_current_event(batch[-1] if batch else None)
                await out.flush()

        @app.timer(interval=settings.timer_tick_seconds)
        async def tick() -> None:
            """A tick per assigned case.inputs partition: timers fire inside stream processing, so their
            table writes land in the right changelog partition and survive restarts."""
            name = case_inputs.get_topic_name()
            value = self.codec.encode("case_input", tick_input(self.lifecycle.now_ms()).value)
            for tp in app.assignor.assigned_actives():
                if tp.topic == name:
                    await app.producer.send(name, None, value, tp.partition, None, None)
