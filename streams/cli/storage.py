"""``streams migrate`` and ``streams retention``: schema and partition housekeeping."""
from __future__ import annotations

import argparse
from datetime import UTC, datetime

from streams.settings import Settings
from streams.storage.retention import drop_expired_partitions, expire_old_rows
from streams.storage.store import Store, store_from_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = subparsers.add_parser("migrate", help="apply ClickHouse schema migrations (idempotent)")
    migrate.add_argument("--store-url", help="overrides settings.store_url (chdb://PATH or clickhouse://host:port/db)")
    migrate.set_defaults(func=run_migrate)
    retention = subparsers.add_parser("retention", help="delete rows older than each table's retention "
                                      "(settings.retention_days, retention_months)")
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
    """Months where retention_months names a table, days (retention_days, with its defaults) elsewhere."""
    settings = Settings()
    now = datetime.now(UTC)
    days = {t: d for t, d in settings.retention_days.items() if t not in settings.retention_months}
    with _open(args) as store:
        dropped = drop_expired_partitions(store, settings.retention_months, now)
        expired = expire_old_rows(store, days, now)
    for table, partitions in dropped.items():
        print(f"{table}: dropped {', '.join(partitions) if partitions else 'nothing'}")
    for table, result in expired.items():
        what = [f"partitions {', '.join(result.partitions)}"] if result.partitions else []
        what += [f"{result.rows} row(s)"] if result.rows else []
        print(f"{table}: kept {days[table]} days, dropped {' and '.join(what) if what else 'nothing'}")
    return 0
