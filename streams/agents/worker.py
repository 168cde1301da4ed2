"""The one place that wires the worker: Faust app, lean consumers, sinks, services, views."""
from __future__ import annotations

import gc
from typing import Any

from streams.settings import Settings

# Allocations minus deallocations between young collections (CPython's default: 700). The case path allocates
# tens of objects per event; at 700 the young generation is collected every few events.
GC_YOUNG_THRESHOLD = 20_000


def ensure_topics(settings: Settings) -> None:
    """Every topic of the pipeline with the configured partitions, replication and min.insync.replicas;
    state topics (cases, the lean consumers' state changelogs, Faust's table changelogs) compacted.
    Existing topics are checked against the settings (TopicSettingsError names the weaker ones)."""
    from streams.bus.admin import create_topics
    from streams.bus.topics import COMPACTED, TopicNames, changelog_topics

    names = TopicNames(settings.topic_prefix)
    # Faust's changelogs too, before Faust starts: it would create them itself, but a worker that joins
    # its group before their metadata has spread can stall in the partition assignment.
    changelogs = names.changelogs(settings.app_id) + changelog_topics(settings.app_id)
    create_topics(settings, names.all() + changelogs, compacted=[names.name(t) for t in COMPACTED] + changelogs)


def lean_case_path(settings: Settings, pipeline: Any) -> list[Any]:
    """The case path's services on lean consumers (streams.agents.casepath)."""
    from streams.agents.actions import ActionRouter, source_index_lookup
    from streams.agents.casepath import LeanActions, LeanLifecycle, SourceIndex, TriageIndex, case_ingest
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lifecycle import WebhookFanout

    sources = SourceIndex(settings)
    triage = TriageIndex(settings, pipeline.codec)
    lifecycle = LeanLifecycle(settings, pipeline.knowledge, pipeline.codec, pipeline.metrics,
                              deliveries=WebhookFanout(settings.webhooks_file), sealer=pipeline.sealer)
    pipeline.lean_lifecycle = lifecycle
    router = ActionRouter(pipeline.codec, pipeline.metrics, pipeline.topics,
                          source_index_lookup(sources, lambda: sources.caught_up), ingestor=pipeline.ingestor,
                          triage_of=source_index_lookup(triage, lambda: triage.caught_up))
    router.rules = pipeline.rules
    ingest = IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics, rules=pipeline.rules)
    return [
        case_ingest(settings, ingest, pipeline.codec, pipeline.metrics, sealer=pipeline.sealer),
        sources, triage, lifecycle,
        LeanActions(settings, router, pipeline.codec, pipeline.metrics, sealer=pipeline.sealer),
    ]


def tune_gc() -> None:
    """Once the worker is set up: the knowledge base, schemas, taxonomy and modules (a few million objects that
    live as long as the process) move to the permanent generation, so that the collector stops walking them in
    every full collection; and young collections run less often. Without this a full collection took ~140 ms
    and cost ~100 µs per event of the case path (bench/core.py), more than the whole ingest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def build_worker(settings: Settings) -> Any:
    """The Faust worker with every service of the pipeline, ready to ``execute_from_commandline()``."""
    import faust

    from streams import faults, logrepeat
    from streams.agents.app import Pipeline
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lean import LeanIngest
    from streams.agents.services import ConsumerLagService, GaugeService, WebhookService
    from streams.metrics import start_metrics_server
    from streams.security import require_worker_secrets
    from streams.sinks.clickhouse import ClickHouseSink
    from streams.storage import store_from_settings
    from streams.wall.web import register_views

    faults.configure(settings.crash_at)
    require_worker_secrets(settings)   # no pseudonym or dead-letter key: no worker
    store = store_from_settings(settings)   # user, password file and TLS from settings
    store.migrate()
    pipeline = Pipeline(settings)
    register_views(pipeline, store)
    start_metrics_server(settings.metrics_port, pipeline.metrics, addr=settings.metrics_host)
    services: list[Any] = [
        # the lean consumer's own adapter over the same Ingestor (one lift-repeat state)
        LeanIngest(settings, IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics,
                                           classify_batches=False, rules=pipeline.rules),
                   pipeline.codec, pipeline.metrics, sealer=pipeline.sealer),
        ClickHouseSink(settings, store, pipeline.codec, pipeline.metrics),
    ]
    if settings.case_path == "lean":
        services += lean_case_path(settings, pipeline)
    services += [GaugeService(pipeline), ConsumerLagService(settings, pipeline.metrics)]
    if settings.webhooks_file:
        services.append(WebhookService(settings, pipeline.metrics, store))
    if settings.gateway_in_worker:
        from streams.gateway.service import GatewayService

        services.append(GatewayService(settings, store, pipeline.knowledge))
    for service in services:
        pipeline.liveness.watch(type(service).__name__, service)
    logrepeat.install()  # after the client libraries are imported: their loggers exist now
    worker = faust.Worker(pipeline.app, *services, loglevel=settings.log_level, redirect_stdouts=False)
    # Faust's terminal spinner puts the root logger at DEBUG so that every record spins it: every aiokafka
    # debug call then builds a LogRecord the handler drops (~7 % of the worker's CPU in bench/run.py's profile).
    worker.spinner = None
    tune_gc()
    return worker
