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
        from streams.storage import BatchWriter
        from streams.webhooks import load_config
        from streams.webhooks.deliver import PrometheusWebhookMetrics, WebhookDeliverer

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
                log.debug("open-case gauge refresh failed: %s", exc)
            await self.sleep(self.interval)
