"""``streams webhooks run`` (the delivery service) and ``streams webhooks redeliver`` (from the DLQ)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from streams.settings import Settings
from streams.sinks.webhooks.config import KINDS, WebhookConfigError, WebhooksConfig, load_config

if TYPE_CHECKING:
    from streams.sinks.webhooks.deliver import Sink
    from streams.storage.writer import BatchWriter

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("webhooks", help="department webhooks: deliver, redeliver dead letters")
    sub = parser.add_subparsers(dest="webhooks_command", required=True)

    run = sub.add_parser("run", help="deliver webhook.deliveries to the endpoints in settings.webhooks_file")
    run.add_argument("--metrics-port", type=int, default=None,
                     help="serve Prometheus metrics on this port (default: none)")
    run.add_argument("--no-store", action="store_true", help="do not write webhook_deliveries rows to ClickHouse")
    run.set_defaults(func=_run)

    again = sub.add_parser("redeliver", help="re-produce dead-lettered deliveries with the attempt count reset")
    again.add_argument("--department", help="only this department (Chinese name)")
    again.add_argument("--case", dest="case_id", help="only this case id")
    again.add_argument("--kind", choices=KINDS, help="only this event kind")
    again.add_argument("--since-ms", type=int, help="only records dead-lettered at or after this epoch ms")
    again.add_argument("--dry-run", action="store_true", help="list what would be redelivered")
    again.set_defaults(func=_redeliver)


def _run(args: argparse.Namespace) -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.webhooks_file is None:
        print("streams webhooks run: set CITYGRID_WEBHOOKS_FILE (settings.webhooks_file)", file=sys.stderr)
        return 2
    try:
        config = load_config(settings.webhooks_file)
    except WebhookConfigError as exc:
        print(f"streams webhooks run: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(settings, config, args))


async def _serve(settings: Settings, config: WebhooksConfig, args: argparse.Namespace) -> int:
    from streams.sinks.webhooks.deliver import WebhookDeliverer
    from streams.sinks.webhooks.metrics import PrometheusWebhookMetrics

    metrics = None
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        metrics = PrometheusWebhookMetrics()
        start_http_server(args.metrics_port, registry=metrics.registry)
    sink: Sink | None = None
    writer: BatchWriter | None = None
    if not args.no_store:
        sink, writer = _store_sink(settings)
    deliverer = WebhookDeliverer(settings, config, metrics=metrics, sink=sink)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(deliverer.stop()))
    writer_task = asyncio.create_task(writer.run()) if writer is not None else None
    try:
        await deliverer.run()
    finally:
        if writer is not None:
            await writer.stop()
            if writer_task is not None:
                await asyncio.gather(writer_task, return_exceptions=True)
    return 0


def _store_sink(settings: Settings) -> tuple[Sink, BatchWriter]:
    """ClickHouse rows through the storage area's BatchWriter (flushes and retries on its own).

    An embedded chdb path can be open in one process only: when the worker holds it, run the deliverer
    inside the worker, point this process at clickhouse-server (clickhouse://...), or pass --no-store."""
    from streams.storage import BatchWriter, store_from_settings

    try:
        store = store_from_settings(settings)
        store.migrate()
    except Exception as exc:
        raise SystemExit(f"streams webhooks run: cannot open the store {settings.store_url} ({exc}); "
                         "use a clickhouse:// store_url or --no-store") from exc
    writer = BatchWriter(store, settings)
    return writer.add, writer


def _redeliver(args: argparse.Namespace) -> int:
    from streams.sinks.webhooks.redeliver import redeliver

    settings = Settings()
    records = asyncio.run(redeliver(settings, args.department, args.case_id, args.kind, args.since_ms, args.dry_run))
    verb = "would redeliver" if args.dry_run else "redelivered"
    for r in records:
        print(f"{r['delivery_id']}\t{r['department']}\t{r['case_id']}\t{r['kind']}\t{r['idempotency_key']}")
    print(f"{verb} {len(records)} deliveries", file=sys.stderr)
    return 0
