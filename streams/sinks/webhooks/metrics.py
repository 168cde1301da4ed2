"""What the webhook deliverer reports, and its Prometheus implementation (names in docs/webhooks.md)."""
from __future__ import annotations

from typing import Any, Protocol


class DeliveryMetrics(Protocol):
    """What the deliverer reports. ``PrometheusWebhookMetrics`` implements it; so may PipelineMetrics."""

    def webhook_attempt(self, department: str, kind: str, outcome: str, http_status: int, latency_s: float) -> None:
        """outcome: delivered | retry | failed (4xx, not retried) | dead (retries given up)"""
    def webhook_delivered(self, department: str, kind: str, end_to_end_s: float) -> None: ...
    def webhook_dead(self, department: str, kind: str, reason: str) -> None: ...
    def webhook_breaker(self, department: str, is_open: bool) -> None: ...
    def webhook_pending(self, count: int) -> None: ...


class PrometheusWebhookMetrics:
    """Webhook metrics on a prometheus_client registry (names in docs/webhooks.md).

    Given the worker's ``PipelineMetrics`` (``pipeline=``), it reuses that object's registry and its
    ``citygrid_webhook_deliveries`` / ``citygrid_webhook_latency_seconds`` series, so dashboards and
    alert rules see one set of names whether delivery runs in the worker or on its own."""

    def __init__(self, registry: Any = None, pipeline: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        if pipeline is not None:
            reg = pipeline.registry
            self.deliveries = pipeline.webhook_deliveries
            self.latency = pipeline.webhook_latency
        else:
            reg = registry if registry is not None else CollectorRegistry()
            self.deliveries = Counter("citygrid_webhook_deliveries", "Webhook delivery attempts by department and "
                                      "outcome (delivered|retry|failed|dead)", ["department", "outcome"], registry=reg)
            self.latency = Histogram("citygrid_webhook_latency_seconds", "Webhook request latency, by department",
                                     ["department"], registry=reg,
                                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.registry = reg
        self.end_to_end = Histogram("citygrid_webhook_delivery_seconds",
                                    "From the delivery record's creation to the 2xx, by department",
                                    ["department"], registry=reg,
                                    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600))
        self.dead = Counter("citygrid_webhook_dead_letters", "Deliveries sent to webhook.deliveries.dlq, by reason",
                            ["department", "kind", "reason"], registry=reg)
        self.breaker = Gauge("citygrid_webhook_breaker_open", "1 while the endpoint's circuit is open",
                             ["department"], registry=reg)
        self.pending = Gauge("citygrid_webhook_pending", "Delivery records held awaiting an outcome", registry=reg)

    def webhook_attempt(self, department: str, kind: str, outcome: str, http_status: int, latency_s: float) -> None:
        self.deliveries.labels(department=department, outcome=outcome).inc()
        self.latency.labels(department=department).observe(latency_s)

    def webhook_delivered(self, department: str, kind: str, end_to_end_s: float) -> None:
        self.end_to_end.labels(department).observe(max(end_to_end_s, 0.0))

    def webhook_dead(self, department: str, kind: str, reason: str) -> None:
        self.dead.labels(department, kind, reason).inc()

    def webhook_breaker(self, department: str, is_open: bool) -> None:
        self.breaker.labels(department).set(1 if is_open else 0)

    def webhook_pending(self, count: int) -> None:
        self.pending.set(count)
