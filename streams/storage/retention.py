"""Retention by dropping whole monthly partitions (18.16 has no TTL)."""
from __future__ import annotations

from datetime import datetime

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
        old = [p for p in partitions(store, table) if p.isdigit() and int(p) < keep_from]
        for partition_id in old:
            store.execute(f"ALTER TABLE {quote_identifier(table)} DROP PARTITION ID %(p)s", {"p": partition_id})
        dropped[table] = old
    return dropped
