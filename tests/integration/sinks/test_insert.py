"""The sink's batch write on real ClickHouse: the rows the server takes are written, each refused row
is set aside with the server's reason (bisecting the batch), and a stopped server is an outage, not
a refusal."""
from __future__ import annotations

from pathlib import Path

import pytest

from streams.local.clickhouse import LocalClickHouseServer
from streams.sinks.insert import Refused, SinkRow, StoreUnavailable, write_refused, write_table
from streams.storage.store import Store, open_store


def rows(levels: list[object]) -> list[SinkRow]:
    return [SinkRow("dispatches", 0, i, 0, {"dispatch_id": f"d{i}", "case_id": "c", "level": level})
            for i, level in enumerate(levels)]


def test_refused_rows_are_set_aside_and_the_rest_is_written(server_store: Store) -> None:
    batch = rows([1, 2, 300, 3, -5, 2 ** 70, 4, "x", float("nan")])
    refused = write_table(server_store, "dispatches", batch)
    assert sorted(r.row.offset for r in refused) == [2, 4, 5, 7, 8]
    by_offset = {r.row.offset: r.reason for r in refused}
    assert "refused by ClickHouse" in by_offset[2] and "Type mismatch" in by_offset[2]
    assert "negative value -5" in by_offset[4]
    assert "expected int" in by_offset[7]
    written = server_store.query("SELECT dispatch_id FROM dispatches ORDER BY dispatch_id")
    assert [r["dispatch_id"] for r in written] == ["d0", "d1", "d3", "d6"]
    write_refused(server_store, refused, ts_ms=1_700_000_000_000)
    dead = server_store.query("SELECT topic, offset, target_table, reason, row FROM sink_dead_letters FINAL "
                              "ORDER BY offset")
    assert [d["offset"] for d in dead] == [2, 4, 5, 7, 8]
    assert all(d["target_table"] == "dispatches" and d["reason"] for d in dead)
    assert '"dispatch_id": "d2"' in dead[0]["row"]


def test_unknown_columns_do_not_block_the_batch(chdb_store: Store) -> None:
    batch = rows([1, 2]) + [SinkRow("store.rows", 3, 9, 4, {"no_such_column": 1})]
    refused = write_table(chdb_store, "dispatches", batch)
    assert [(r.row.offset, r.row.row_index) for r in refused] == [(9, 4)]
    assert "unknown column" in refused[0].reason
    assert chdb_store.query("SELECT count() AS n FROM dispatches")[0]["n"] == 2


@pytest.mark.clickhouse_server
def test_a_stopped_server_is_an_outage(tmp_path: Path) -> None:
    server = LocalClickHouseServer(tmp_path / "ch")
    server.start()
    store = open_store(server.store_url("outage"))
    try:
        store.migrate()
        assert write_table(store, "dispatches", rows([1])) == []
        server.stop()
        with pytest.raises(StoreUnavailable):
            write_table(store, "dispatches", rows([2, 3]))
        with pytest.raises(StoreUnavailable):
            write_refused(store, [Refused(rows([5])[0], "dispatches", "r")], 0)
        server.start()
        assert write_table(store, "dispatches", rows([2, 3])) == []  # the client reconnects
        assert store.query("SELECT count() AS n FROM dispatches FINAL")[0]["n"] == 2
    finally:
        store.close()
        server.stop()
