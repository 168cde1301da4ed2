"""Long-running helpers the worker starts beside the Faust app (mode services, stopped in order)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import mode

from streams.metrics import PipelineMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)


class WebhookService(mode.Service):
    """Runs the webhook deliverer in the worker; its per-attempt rows go to ClickHouse through a BatchWriter."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics, store: Any, **kw: Any) -> None:
        super().__init__(**kw)
        from streams.sinks.webhooks import load_config
        from streams.sinks.webhooks.deliver import PrometheusWebhookMetrics, WebhookDeliverer
        from streams.storage import BatchWriter

        self.writer = BatchWriter(store, settings, metrics)
        self.deliverer = WebhookDeliverer(settings, load_config(settings.webhooks_file),
                                          metrics=PrometheusWebhookMetrics(registry=metrics.registry, pipeline=metrics),
                                          sink=self.writer.add)

    async def on_start(self) -> None:
        self.add_future(self.writer.run())
        self.add_future(self.deliverer.run())

    async def on_stop(self) -> None:
        await self.deliverer.stop()
        await self.writer.stop()


class GaugeService(mode.Service):
    """Refreshes the open-cases gauge from the lifecycle engine every few seconds (cheap: counts only)."""

    def __init__(self, pipeline: Any, interval: float = 5.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.pipeline = pipeline
        self.interval = interval

    @mode.Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            try:
                self.pipeline.metrics.set_open_cases(self.pipeline.open_case_counts())
            except Exception as exc:  # metrics must never take the worker down
                log.warning("open-case gauge refresh failed: %s", exc)
            await self.sleep(self.interval)


class ConsumerLagService(mode.Service):
    """Consumer lag of every group the worker runs (agents, lean ingest, ClickHouse sink, webhooks),
    from committed offsets vs log-end offsets, every ``interval`` seconds. Label ``topic`` is
    ``<group role>/<logical topic>`` since several groups read case.inputs."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics, interval: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.metrics = metrics
        self.interval = interval
        app_id = settings.app_id
        self.groups = {app_id: "agents", f"{app_id}-lean-ingest": "lean-ingest",
                       f"{app_id}-clickhouse-sink": "clickhouse-sink", f"{app_id}-webhooks": "webhooks"}

    def measure(self) -> dict[tuple[str, int], int]:
        from kafka import KafkaAdminClient, KafkaConsumer

        from streams.bus import clients
        from streams.bus.topics import TopicNames

        names = TopicNames(self.settings.topic_prefix)
        admin = KafkaAdminClient(**clients.admin(self.settings))
        consumer = KafkaConsumer(**clients.offsets_consumer(self.settings))
        try:
            consumer.topics()  # end_offsets needs the partitions' metadata
            lag: dict[tuple[str, int], int] = {}
            for group, role in self.groups.items():
                committed = group_offsets(admin, group)
                # changelog topics are read by recovery, not by the group: skip them
                committed = {tp: om for tp, om in committed.items()
                             if not tp.topic.endswith("-changelog") and om.offset >= 0}
                if not committed:
                    continue
                ends = consumer.end_offsets(list(committed))
                for tp, meta in committed.items():
                    lag[(f"{role}/{names.logical(tp.topic)}", tp.partition)] = max(0, ends.get(tp, 0) - meta.offset)
            return lag
        finally:
            consumer.close()
            admin.close()

    @mode.Service.task
    async def _refresh(self) -> None:
        while not self.should_stop:
            try:
                self.metrics.set_consumer_lag(await asyncio.to_thread(self.measure))
            except Exception as exc:  # metrics must never take the worker down
                log.warning("consumer lag measurement failed: %s", exc)
            await self.sleep(self.interval)


def group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """Committed offsets of one group (kafka-python 3 renamed the call and returns a dict per group)."""
    if hasattr(admin, "list_group_offsets"):
        return admin.list_group_offsets({group: None}).get(group, {})
    return admin.list_consumer_group_offsets(group)
