"""The sharded layout's statement translation (pure text; the real cluster is in tests/integration)."""
from __future__ import annotations

import pytest

from streams.storage.cluster import ClusterLayoutError, shard_key, translate
from streams.storage.store import load_migrations

CREATE = """CREATE TABLE IF NOT EXISTS device_minutes (
    device_id String,
    metric String,
    minute_ms Int64,
    minute DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(minute_ms, 1000), 'Asia/Shanghai'),
    n UInt32
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (device_id, metric, minute)"""


def test_shard_key_is_the_dedup_key_without_derived_columns() -> None:
    assert shard_key(CREATE) == ["device_id", "metric"]
    assert shard_key("CREATE TABLE t (a String, v Int64) ENGINE = ReplacingMergeTree(v) ORDER BY a") == ["a"]


def test_create_becomes_local_table_and_distributed_table() -> None:
    local, distributed = translate(CREATE, "city", "citygrid")
    assert local.startswith("CREATE TABLE IF NOT EXISTS device_minutes_local (")
    assert local.endswith("ORDER BY (device_id, metric, minute)")
    assert distributed == ("CREATE TABLE IF NOT EXISTS device_minutes AS device_minutes_local ENGINE = "
                           "Distributed(city, citygrid, device_minutes_local, cityHash64(device_id, metric))")


def test_alter_applies_to_the_local_table_first() -> None:
    assert translate("ALTER TABLE signals ADD COLUMN stored_ms Int64 DEFAULT 0", "city", "db") == [
        "ALTER TABLE signals_local ADD COLUMN stored_ms Int64 DEFAULT 0",
        "ALTER TABLE signals ADD COLUMN stored_ms Int64 DEFAULT 0"]


@pytest.mark.parametrize("statement", [
    "CREATE MATERIALIZED VIEW v AS SELECT 1",
    "CREATE TABLE t (a String) ENGINE = Memory",  # no ORDER BY: no sharding key
    "CREATE TABLE t (ts DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY ts",  # only derived columns
    "CREATE TABLE t (a String) ENGINE = MergeTree() ORDER BY (lower(a))",
])
def test_untranslatable_statements_are_refused(statement: str) -> None:
    with pytest.raises(ClusterLayoutError):
        translate(statement, "city", "db")


def test_every_shipped_migration_translates() -> None:
    for migration in load_migrations():
        for statement in migration.statements:
            assert translate(statement, "city", "citygrid")
