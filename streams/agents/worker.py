"""The one place that wires the worker: Faust app, lean consumers, sinks, services, views."""
from __future__ import annotations

from typing import Any

from streams.settings import Settings


def ensure_topics(settings: Settings) -> None:
    """Every topic of the pipeline, with the configured partitions (and this app's state changelogs)."""
    from streams.bus.admin import create_topics
    from streams.bus.topics import TopicNames

    names = TopicNames(settings.topic_prefix)
    changelogs = names.changelogs(settings.app_id)
    create_topics(settings, names.all() + changelogs, settings.topic_partitions, changelogs)


def build_worker(settings: Settings) -> Any:
    """The Faust worker with every service of the pipeline, ready to ``execute_from_commandline()``."""
    import faust

    from streams.agents.app import Pipeline
    from streams.agents.ingest import IngestAdapter
    from streams.agents.lean import LeanIngest
    from streams.agents.services import ConsumerLagService, GaugeService, WebhookService
    from streams.metrics import start_metrics_server
    from streams.security import require_worker_secrets
    from streams.sinks.clickhouse import ClickHouseSink
    from streams.storage import store_from_settings
    from streams.wall.web import register_views

    require_worker_secrets(settings)   # no pseudonym or dead-letter key: no worker
    store = store_from_settings(settings)   # user, password file and TLS from settings
    store.migrate()
    pipeline = Pipeline(settings)
    register_views(pipeline, store)
    start_metrics_server(settings.metrics_port, pipeline.metrics, addr=settings.metrics_host)
    services: list[Any] = [
        # the lean consumer's own adapter over the same Ingestor (one lift-repeat state)
        LeanIngest(settings, IngestAdapter(pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.topics,
                                           classify_batches=False), pipeline.codec, pipeline.metrics,
                   sealer=pipeline.sealer),
        ClickHouseSink(settings, store, pipeline.codec, pipeline.metrics),
    ]
    services += [GaugeService(pipeline), ConsumerLagService(settings, pipeline.metrics)]
    if settings.webhooks_file:
        services.append(WebhookService(settings, pipeline.metrics, store))
    if settings.gateway_in_worker:
        from streams.gateway.service import GatewayService

        services.append(GatewayService(settings, store, pipeline.knowledge))
    for service in services:
        pipeline.liveness.watch(type(service).__name__, service)
    return faust.Worker(pipeline.app, *services, loglevel=settings.log_level, redirect_stdouts=False)
