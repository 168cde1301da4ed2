"""The one place that wires the worker: Faust app, lean consumers, sinks, services, views."""
from __future__ import annotations

from typing import Any

from streams.settings import Settings


def ensure_topics(settings: Settings) -> None:
    """Every topic of the pipeline with the configured partitions, replication and min.insync.replicas
    (state topics compacted); existing topics, the Faust changelogs included, are checked against them."""
    from streams.bus.admin import TopicPolicy, create_topics
    from streams.bus.topics import COMPACTED, TopicNames, changelog_topics

    names = TopicNames(settings.topic_prefix)
    changelogs = changelog_topics(settings.app_id)
    # The changelogs too, before Faust starts: it would create them itself, but a worker that joins
    # its group before their metadata has spread can stall in the partition assignment.
    create_topics(settings.kafka_bootstrap, names.all() + changelogs, TopicPolicy.from_settings(settings),
                  compacted=[names.name(t) for t in COMPACTED] + changelogs)


def build_worker(settings: Settings) -> Any:
    """The Faust worker with every service of the pipeline, ready to ``execute_from_commandline()``."""
    import faust

    from streams import faults, logrepeat
    from streams.agents.app import Pipeline
    from streams.agents.lean import LeanIngest
    from streams.agents.services import ConsumerLagService, GaugeService, WebhookService
    from streams.metrics import start_metrics_server
    from streams.sinks.clickhouse import ClickHouseSink
    from streams.storage import open_store
    from streams.wall.web import register_views

    faults.configure(settings.crash_at)
    store = open_store(settings.store_url)
    store.migrate()
    pipeline = Pipeline(settings)
    register_views(pipeline, store)
    start_metrics_server(settings.metrics_port, pipeline.metrics)
    services: list[Any] = [
        LeanIngest(settings, pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.emit_ingest_result),
        ClickHouseSink(settings, store, pipeline.codec, pipeline.metrics),
    ]
    services += [GaugeService(pipeline), ConsumerLagService(settings, pipeline.metrics)]
    if settings.webhooks_file:
        services.append(WebhookService(settings, pipeline.metrics, store))
    logrepeat.install()  # after the client libraries are imported: their loggers exist now
    return faust.Worker(pipeline.app, *services, loglevel=settings.log_level, redirect_stdouts=False)
