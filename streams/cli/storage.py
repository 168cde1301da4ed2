"""``streams migrate`` and ``streams retention``: schema and partition housekeeping."""
from __future__ import annotations

import argparse
from datetime import UTC, datetime

from streams.settings import Settings
from streams.storage.retention import drop_expired_partitions
from streams.storage.store import Store, store_from_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = subparsers.add_parser("migrate", help="apply ClickHouse schema migrations (idempotent)")
    migrate.add_argument("--store-url", help="overrides settings.store_url (chdb://PATH or clickhouse://host:port/db)")
    migrate.set_defaults(func=run_migrate)
    retention = subparsers.add_parser("retention", help="drop monthly partitions older than settings.retention_months")
    retention.add_argument("--store-url", help="overrides settings.store_url")
    retention.set_defaults(func=run_retention)


def _store_url(args: argparse.Namespace) -> str:
    return args.store_url or Settings().store_url


def _open(args: argparse.Namespace) -> Store:
    """settings.store_url with its credentials and TLS (store_from_settings), or --store-url."""
    settings = Settings()
    if args.store_url:
        settings = settings.model_copy(update={"store_url": args.store_url})
    return store_from_settings(settings)


def run_migrate(args: argparse.Namespace) -> int:
    url = _store_url(args)
    with _open(args) as store:
        applied = store.migrate()
        current = store.applied_migrations()
    if applied:
        print(f"{url}: applied {', '.join(applied)}")
    else:
        print(f"{url}: up to date ({current[-1] if current else 'no migrations'})")
    return 0


def run_retention(args: argparse.Namespace) -> int:
    settings = Settings()
    with _open(args) as store:
        dropped = drop_expired_partitions(store, settings.retention_months, datetime.now(UTC))
    for table, partitions in dropped.items():
        print(f"{table}: dropped {', '.join(partitions) if partitions else 'nothing'}")
    return 0
