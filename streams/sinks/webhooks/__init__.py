"""Department webhooks (issue 6): signed, retried, idempotent HTTP deliveries driven from Kafka.

- ``config``: endpoint configuration per department (YAML named by ``settings.webhooks_file``).
- ``payload``: lifecycle notifications -> ``webhook_delivery`` records with a documented JSON body.
- ``signing``: request headers, HMAC-SHA256 signature and ``verify_signature`` for receivers.
- ``policy``: per-endpoint circuit breaker, token bucket and Retry-After pause; status classes; backoff.
- ``metrics``: ``DeliveryMetrics`` (what the deliverer reports) and ``PrometheusWebhookMetrics``.
- ``deliver``: ``WebhookDeliverer``, the at-least-once delivery service on ``webhook.deliveries``.
- ``redeliver``: re-produce dead-lettered deliveries.
The commands (``streams webhooks run`` / ``redeliver``) live in ``streams.cli.webhooks``.
"""
from streams.sinks.webhooks.config import Endpoint, WebhooksConfig, load_config
from streams.sinks.webhooks.payload import NotificationError, build_deliveries, encode_delivery
from streams.sinks.webhooks.signing import sign, signed_headers, verify_signature

__all__ = [
    "Endpoint",
    "WebhooksConfig",
    "load_config",
    "NotificationError",
    "build_deliveries",
    "encode_delivery",
    "sign",
    "signed_headers",
    "verify_signature",
]
