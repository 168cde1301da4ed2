"""Retention on both engines: dropping whole monthly partitions."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.storage import drop_expired_partitions
from streams.storage.retention import partitions
from streams.storage.store import Store
from tests.integration.storage.support import month_ms


def test_retention_drops_only_old_month_partitions(store: Store) -> None:
    months = [(2026, 8), (2026, 9), (2026, 10), (2026, 11)]
    store.insert("signals", [{"signal_id": f"s{m}", "ts_ms": month_ms(y, m)} for y, m in months])
    store.insert("dead_letters", [{"topic": "t", "offset": m, "ts_ms": month_ms(y, m)} for y, m in months])
    now = datetime(2026, 11, 20, tzinfo=UTC)
    dropped = drop_expired_partitions(store, {"signals": 2}, now)
    assert dropped == {"signals": ["202608", "202609"]}
    assert partitions(store, "signals") == ["202610", "202611"]
    assert partitions(store, "dead_letters") == ["202608", "202609", "202610", "202611"]  # not configured: kept
    assert drop_expired_partitions(store, {"signals": 2}, now) == {"signals": []}
    with pytest.raises(ValueError, match="unknown table"):
        drop_expired_partitions(store, {"nope": 1}, now)


def test_day_retention_drops_old_months_and_deletes_older_rows_of_the_cutoff_month(store: Store) -> None:
    from streams.storage.retention import expire_old_rows

    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    ages = {"d2": 2, "d20": 20, "d25": 25, "d40": 40, "d100": 100}   # days before now
    day_ms = 86_400_000
    now_ms = int(now.timestamp() * 1000)
    store.insert("dead_letters", [{"topic": name, "offset": 1, "ts_ms": now_ms - age * day_ms}
                                  for name, age in ages.items()])
    store.insert("cases", [{"case_id": name, "version": 1, "updated_ms": now_ms, "opened_ms": now_ms - age * day_ms}
                           for name, age in ages.items()])
    result = expire_old_rows(store, {"dead_letters": 30, "cases": 30, "not_a_table_yet": 5}, now)
    # cutoff 2026-10-21: August's partition (100 days) goes whole, October's older rows (40 days) one by one
    assert result["dead_letters"].partitions == ["202608"] and result["dead_letters"].rows == 1
    assert sorted(r["topic"] for r in store.query("SELECT topic FROM dead_letters FINAL")) == ["d2", "d20", "d25"]
    assert sorted(r["case_id"] for r in store.query("SELECT case_id FROM cases FINAL")) == ["d2", "d20", "d25"]
    assert "not_a_table_yet" not in result
    again = expire_old_rows(store, {"dead_letters": 30}, now)
    assert again["dead_letters"].partitions == [] and again["dead_letters"].rows == 0


def test_default_retention_covers_the_tables_with_personal_data() -> None:
    from streams.settings import DEFAULT_RETENTION_DAYS, Settings

    assert Settings().retention_days == DEFAULT_RETENTION_DAYS
    assert DEFAULT_RETENTION_DAYS["dead_letters"] == 30 and DEFAULT_RETENTION_DAYS["triage"] == 90
    assert DEFAULT_RETENTION_DAYS["signals"] == 730 and DEFAULT_RETENTION_DAYS["inspector_tracks"] <= 90
