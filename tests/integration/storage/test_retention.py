"""Retention on both engines: dropping whole monthly partitions."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.storage import drop_expired_partitions
from streams.storage.retention import partitions
from streams.storage.store import Store
from tests.integration.storage.support import month_ms


def test_retention_drops_only_old_month_partitions(store: Store) -> None:
    months = [(2026, 8), (2026, 9), (2026, 10), (2026, 11)]
    store.insert("signals", [{"signal_id": f"s{m}", "ts_ms": month_ms(y, m)} for y, m in months])
    store.insert("dead_letters", [{"topic": "t", "offset": m, "ts_ms": month_ms(y, m)} for y, m in months])
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    dropped = drop_expired_partitions(store, {"signals": 2}, now)
    assert dropped == {"signals": ["202608", "202609"]}
    assert partitions(store, "signals") == ["202610", "202611"]
    assert partitions(store, "dead_letters") == ["202608", "202609", "202610", "202611"]  # not configured: kept
    assert drop_expired_partitions(store, {"signals": 2}, now) == {"signals": []}
    with pytest.raises(ValueError, match="unknown table"):
        drop_expired_partitions(store, {"nope": 1}, now)
