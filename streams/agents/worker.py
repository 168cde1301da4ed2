"""The one place that wires the worker: Faust app, lean consumers, sinks, services, views."""
from __future__ import annotations

from typing import Any

from streams.settings import Settings


def ensure_topics(settings: Settings) -> None:
    """Every topic of the pipeline, with the configured partitions."""
    from streams.bus.admin import create_topics
    from streams.bus.topics import TopicNames

    create_topics(settings, TopicNames(settings.topic_prefix).all(), settings.topic_partitions)


def lean_case_path(settings: Settings, pipeline: Any) -> list[Any]:
    """The case path's services on lean consumers (streams.agents.casepath)."""
    from streams.agents.actions import ActionRouter, source_index_lookup
    from streams.agents.casepath import LeanActions, LeanLifecycle, SourceIndex, case_ingest
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lifecycle import WebhookFanout

    sources = SourceIndex(settings)
    lifecycle = LeanLifecycle(settings, pipeline.knowledge, pipeline.codec, pipeline.metrics,
                              deliveries=WebhookFanout(settings.webhooks_file))
    pipeline.lean_lifecycle = lifecycle
    router = ActionRouter(pipeline.codec, pipeline.metrics, pipeline.topics,
                          source_index_lookup(sources, lambda: sources.caught_up))
    return [
        case_ingest(settings, IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics),
                    pipeline.codec, pipeline.metrics),
        sources, lifecycle, LeanActions(settings, router, pipeline.codec, pipeline.metrics),
    ]


def build_worker(settings: Settings) -> Any:
    """The Faust worker with every service of the pipeline, ready to ``execute_from_commandline()``."""
    import faust

    from streams.agents.app import Pipeline
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lean import LeanIngest
    from streams.agents.services import ConsumerLagService, GaugeService, WebhookService
    from streams.metrics import start_metrics_server
    from streams.sinks.clickhouse import ClickHouseSink
    from streams.storage import open_configured_store
    from streams.wall.web import register_views

    store = open_configured_store(settings)
    store.migrate()
    pipeline = Pipeline(settings)
    register_views(pipeline, store)
    start_metrics_server(settings.metrics_port, pipeline.metrics)
    services: list[Any] = [
        # the lean consumer's own adapter over the same Ingestor (one lift-repeat state)
        LeanIngest(settings, IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics,
                                           classify_batches=False), pipeline.codec, pipeline.metrics),
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
    worker = faust.Worker(pipeline.app, *services, loglevel=settings.log_level, redirect_stdouts=False)
    # Faust's terminal spinner puts the root logger at DEBUG so that every record spins it: every aiokafka
    # debug call then builds a LogRecord the handler drops (~7 % of the worker's CPU in bench/run.py's profile).
    worker.spinner = None
    return worker
