"""The sharded layout on two real clickhouse-server 18.16 shards: local tables plus Distributed tables,
inserts through the Distributed table, the same rows from either shard, every wall query, retention."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from streams.core.times import CITY_TZ
from streams.local.clickhouse import LocalClickHouseCluster
from streams.storage import open_store
from streams.storage.cluster import local_table
from streams.storage.retention import drop_expired_partitions
from streams.storage.store import Store, load_migrations
from streams.wall import queries as wall
from tests.fixtures.clickhouse import fresh_cluster_store
from tests.integration.wall.test_queries import EXPECTED, FROM_S, TO_S, VARIABLES, seed

pytestmark = pytest.mark.clickhouse_server


def shard_stores(cluster: LocalClickHouseCluster, store: Store) -> list[Store]:
    """A plain (unsharded) store on each shard, for looking at what each one holds."""
    return [open_store(server.store_url(store.database)) for server in cluster.servers]


def test_migrate_creates_local_and_distributed_tables_on_every_shard(
        clickhouse_cluster: LocalClickHouseCluster, cluster_store: Store) -> None:
    nodes = shard_stores(clickhouse_cluster, cluster_store)
    try:
        for node in nodes:
            engines = {r["name"]: r["engine"] for r in node.query(
                "SELECT name, engine FROM system.tables WHERE database = %(db)s", {"db": node.database})}
            for table in ("signals", "cases", "case_transitions", "inspector_tracks"):
                assert engines[table] == "Distributed"
                assert engines[local_table(table)] == "ReplacingMergeTree"
            create = node.query(f"SHOW CREATE TABLE {node.database}.cases")[0]["statement"]
            assert "cityHash64(case_id)" in create
            # signals dedup on (ts, signal_id); ts is derived from ts_ms, so the hash takes signal_id alone
            create = node.query(f"SHOW CREATE TABLE {node.database}.signals")[0]["statement"]
            assert "cityHash64(signal_id)" in create
            # 0002 added a column to both
            for table in ("signals", local_table("signals")):
                assert "stored_ms" in [c["name"] for c in node.query(
                    "SELECT name FROM system.columns WHERE database = %(db)s AND table = %(t)s",
                    {"db": node.database, "t": table})]
            assert {r["version"] for r in node.query("SELECT version FROM schema_migrations FINAL")} == {
                m.version for m in load_migrations()}
    finally:
        for node in nodes:
            node.close()
    assert cluster_store.migrate() == []  # idempotent
    assert cluster_store.applied_migrations() == [m.version for m in load_migrations()]
    # the writer sees the Distributed table's columns, defaults included
    assert "ts" not in cluster_store.writable_columns("signals")


def test_rows_spread_over_both_shards_and_read_whole_from_either(
        clickhouse_cluster: LocalClickHouseCluster, cluster_store: Store) -> None:
    base = int(datetime(2026, 11, 20, 9, tzinfo=CITY_TZ).timestamp() * 1000)
    cases = [{"case_id": f"XH01-20261120-{i:08x}", "version": v, "updated_ms": base + v, "opened_ms": base,
              "category_name": "暴露垃圾", "status": "closed" if v == 2 else "dispatch"}
             for i in range(200) for v in (1, 2)]
    cluster_store.insert("cases", cases)
    cluster_store.insert("cases", cases)  # a retried batch
    nodes = shard_stores(clickhouse_cluster, cluster_store)
    try:
        local_counts = [node.query(f"SELECT count() AS n FROM {local_table('cases')}")[0]["n"] for node in nodes]
        assert sum(local_counts) == 800 and all(n > 100 for n in local_counts), local_counts
        for node in nodes:
            # every version of a case is on one shard, so FINAL collapses them there
            rows = node.query("SELECT count() AS n, countIf(status = 'closed') AS closed FROM cases FINAL")
            assert rows == [{"n": 200, "closed": 200}]
    finally:
        for node in nodes:
            node.close()


@pytest.fixture(scope="module")
def seeded_cluster_store(clickhouse_cluster: LocalClickHouseCluster) -> Iterator[Store]:
    """The wall tests' seed (every batch written twice) in one sharded database, read by every query."""
    for store in fresh_cluster_store(clickhouse_cluster):
        seed(store)
        yield store


@pytest.mark.parametrize("name", sorted(wall.QUERIES))
def test_wall_query_on_the_cluster(seeded_cluster_store: Store, name: str) -> None:
    rows = wall.run(seeded_cluster_store, name, FROM_S, TO_S, interval_s=3600, variables=VARIABLES)
    expected = EXPECTED[name]
    assert [{k: row[k] for k in exp} for row, exp in zip(rows, expected, strict=False)] == expected
    assert len(rows) == len(expected)


def test_retention_drops_old_partitions_on_every_shard(
        clickhouse_cluster: LocalClickHouseCluster, cluster_store: Store) -> None:
    old = int(datetime(2025, 1, 10, tzinfo=CITY_TZ).timestamp() * 1000)
    new = int(datetime(2026, 11, 10, tzinfo=CITY_TZ).timestamp() * 1000)
    cluster_store.insert("signals", [{"signal_id": f"s{i}", "ts_ms": old if i % 2 else new} for i in range(100)])
    dropped = drop_expired_partitions(cluster_store, {"signals": 3}, datetime(2026, 11, 20, tzinfo=CITY_TZ))
    assert dropped == {"signals": ["202501"]}
    nodes = shard_stores(clickhouse_cluster, cluster_store)
    try:
        assert all(node.query("SELECT count() AS n FROM signals")[0]["n"] == 50 for node in nodes)
        assert all(node.query(f"SELECT count() AS n FROM {local_table('signals')}")[0]["n"] > 0 for node in nodes)
    finally:
        for node in nodes:
            node.close()


def test_chdb_cannot_be_sharded() -> None:
    with pytest.raises(ValueError, match="needs clickhouse://"):
        open_store("chdb:///tmp/never", cluster="citygrid")
