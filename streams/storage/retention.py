"""Retention: dropping whole monthly partitions, and deleting the older rows of the month a day-based
retention's cutoff falls in (18.16 has no TTL). Defaults per table: settings.retention_days."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.core.times import (
    CITY_TZ,  # partitions are toYYYYMM of a DateTime('Asia/Shanghai')
)
from streams.storage.sql import quote_identifier
from streams.storage.store import Store


def cutoff_month(now: datetime, months: int) -> int:
    """The oldest YYYYMM kept when keeping ``months`` months including the current one."""
    if months < 1:
        raise ValueError(f"retention must keep at least 1 month, got {months}")
    local = now.astimezone(CITY_TZ)
    index = local.year * 12 + (local.month - 1) - (months - 1)
    return (index // 12) * 100 + index % 12 + 1


def partitions(store: Store, table: str) -> list[str]:
    rows = store.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = %(db)s AND table = %(table)s AND active "
        "ORDER BY partition_id",
        {"db": store.database, "table": table},
    )
    return [r["partition_id"] for r in rows]


def drop_expired_partitions(store: Store, retention_months: dict[str, int], now: datetime) -> dict[str, list[str]]:
    """Drop each listed table's partitions older than its retention; returns table -> dropped partition ids."""
    known = set(store.tables())
    dropped: dict[str, list[str]] = {}
    for table, months in sorted(retention_months.items()):
        if table not in known:
            raise ValueError(f"retention_months names unknown table {table!r}")
        keep_from = cutoff_month(now, months)
        gone: set[str] = set()
        for node, name in store.partition_targets(table):  # each shard's local table on a cluster
            old = [p for p in partitions(node, name) if p.isdigit() and int(p) < keep_from]
            for partition_id in old:
                node.execute(f"ALTER TABLE {quote_identifier(name)} DROP PARTITION ID %(p)s", {"p": partition_id})
            gone.update(old)
        dropped[table] = sorted(gone)
    return dropped


# Tables partitioned by another column than ``ts`` (migrations 0001): the time a row's age is counted from.
TIME_COLUMN = {"cases": "opened"}


@dataclass
class Expired:
    partitions: list[str]   # whole monthly partitions dropped
    rows: int               # rows deleted from the partition the cutoff falls in


def wait_for_mutations(store: Store, table: str, timeout_s: float = 120.0) -> None:
    """Block until the table's ALTER ... DELETE/UPDATE mutations are applied (they run in the background)."""
    deadline = time.monotonic() + timeout_s
    while store.query("SELECT count() AS n FROM system.mutations WHERE database = %(db)s AND table = %(t)s "
                      "AND is_done = 0", {"db": store.database, "t": table})[0]["n"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"mutations on {table} still running after {timeout_s}s")
        time.sleep(0.2)


def expire_old_rows(store: Store, retention_days: dict[str, int], now: datetime) -> dict[str, Expired]:
    """Keep each listed table's last ``days`` days: whole older months are dropped as partitions (cheap),
    the rest of the cutoff's month is deleted row by row (a mutation, waited for). 18.16 has no TTL."""
    known = set(store.tables())
    done: dict[str, Expired] = {}
    for table, days in sorted(retention_days.items()):
        if table not in known:
            continue   # a table a later migration adds, or another component's: nothing to expire yet
        if days < 1:
            raise ValueError(f"retention of {table} must keep at least 1 day, got {days}")
        cutoff = now - timedelta(days=days)
        local = cutoff.astimezone(CITY_TZ)
        keep_from = local.year * 100 + local.month
        old = [p for p in partitions(store, table) if p.isdigit() and int(p) < keep_from]
        for partition_id in old:
            store.execute(f"ALTER TABLE {quote_identifier(table)} DROP PARTITION ID %(p)s", {"p": partition_id})
        column = quote_identifier(TIME_COLUMN.get(table, "ts"))
        where = f"{column} < toDateTime({int(cutoff.timestamp())})"
        rows = store.query(f"SELECT count() AS n FROM {quote_identifier(table)} WHERE {where}")[0]["n"]
        if rows:
            store.execute(f"ALTER TABLE {quote_identifier(table)} DELETE WHERE {where}")
            wait_for_mutations(store, table)
        done[table] = Expired(old, int(rows))
    return done
