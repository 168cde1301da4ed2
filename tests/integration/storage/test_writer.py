"""BatchWriter on real engines: size/interval flushes, back-pressure, retries through real failures,
and a real clickhouse-server stopped and restarted mid-stream."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.local.clickhouse import LocalClickHouseServer
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.storage import BackPressure, BatchWriter, RowError, WriterStopped, open_store
from streams.storage.store import Store

BASE_MS = 1_763_600_000_000


def settings(**overrides: Any) -> Settings:
    values = dict(store_batch_rows=1000, store_flush_seconds=0.05, store_buffer_rows=100_000)
    values.update(overrides)
    return Settings(**values)


def transitions(start: int, count: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i:07d}", "case_id": f"c{i % 50}", "ts_ms": BASE_MS + i * 1000, "action": "dispatch"}
            for i in range(start, start + count)]


def count(store: Store, table: str = "case_transitions") -> int:
    return store.query(f"SELECT count() AS n FROM {table} FINAL")[0]["n"]


async def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until check() holds (a liveness bound, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


async def running(writer: BatchWriter, body: Callable[[asyncio.Task[None]], Awaitable[None]]) -> None:
    task = asyncio.create_task(writer.run())
    try:
        await body(task)
    finally:
        await writer.stop()
        await asyncio.wait_for(task, 30)


async def test_flushes_when_a_table_reaches_batch_rows(store: Store) -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    writer = BatchWriter(store, settings(store_batch_rows=100, store_flush_seconds=3600), metrics)

    async def body(_: asyncio.Task[None]) -> None:
        writer.add("case_transitions", transitions(0, 99))
        await asyncio.sleep(0.2)
        assert count(store) == 0  # below the batch size and the interval is an hour
        writer.add("case_transitions", transitions(99, 1))
        await eventually(lambda: count(store) == 100, what="size-triggered flush")

    await running(writer, body)
    batches = metrics.registry.get_sample_value("citygrid_clickhouse_batch_rows_count", {"table": "case_transitions"})
    assert batches == 1  # one INSERT for the 100 rows
    assert metrics.registry.get_sample_value("citygrid_clickhouse_rows_written_total",
                                             {"table": "case_transitions"}) == 100


async def test_flushes_on_the_interval(store: Store) -> None:
    writer = BatchWriter(store, settings(store_batch_rows=10_000, store_flush_seconds=0.1))

    async def body(_: asyncio.Task[None]) -> None:
        writer.add("case_transitions", transitions(0, 5))
        writer.add("dispatches", [{"dispatch_id": "d1", "case_id": "c1", "ts_ms": BASE_MS}])
        await eventually(lambda: count(store) == 5 and count(store, "dispatches") == 1, what="interval flush")

    await running(writer, body)
    assert writer.pending == 0


async def test_bad_rows_are_refused_at_add_and_nothing_is_buffered(store: Store) -> None:
    writer = BatchWriter(store, settings())
    with pytest.raises(RowError):
        writer.add("case_transitions", transitions(0, 3) + [{"event_id": "bad", "ts_ms": "later"}])
    assert writer.pending == 0


async def test_back_pressure_beyond_the_buffer_and_wait_for_room(store: Store) -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    writer = BatchWriter(store, settings(store_buffer_rows=10, store_batch_rows=1000, store_flush_seconds=3600),
                         metrics)
    writer.add("case_transitions", transitions(0, 8))
    with pytest.raises(BackPressure):
        writer.add("case_transitions", transitions(8, 5))
    assert writer.pending == 8  # all or nothing
    assert metrics.registry.get_sample_value("citygrid_clickhouse_backpressure_total") == 1
    waiter = asyncio.create_task(writer.wait_for_room(5))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await writer.flush()
    await asyncio.wait_for(waiter, 10)
    writer.add("case_transitions", transitions(8, 5))
    await writer.flush()
    assert count(store) == 13
    with pytest.raises(ValueError):
        await writer.wait_for_room(11)


async def test_retries_through_a_real_failure_without_loss_or_duplicates(store: Store) -> None:
    """The table disappears (renamed away) while rows flow; inserts fail for real, then recover."""
    metrics = PipelineMetrics(CollectorRegistry())
    writer = BatchWriter(store, settings(store_batch_rows=50, store_flush_seconds=0.05), metrics,
                         retry_initial_seconds=0.05, retry_max_seconds=0.2)
    store.columns("case_transitions")  # known before the failure, as in a worker that has written already
    store.execute("RENAME TABLE case_transitions TO case_transitions_away")

    async def body(_: asyncio.Task[None]) -> None:
        for start in range(0, 300, 50):
            writer.add("case_transitions", transitions(start, 50))
            await asyncio.sleep(0.01)
        await eventually(lambda: writer.failures >= 2, what="failed inserts")
        writer.add("case_transitions", transitions(300, 20))  # still accepting while failing
        store.execute("RENAME TABLE case_transitions_away TO case_transitions")
        await eventually(lambda: writer.pending == 0, what="buffer drained")

    await running(writer, body)
    assert count(store) == 320
    assert store.query("SELECT uniqExact(event_id) AS n FROM case_transitions")[0]["n"] == 320
    assert metrics.registry.get_sample_value("citygrid_clickhouse_write_failures_total",
                                             {"table": "case_transitions"}) >= 2


async def test_stop_flushes_what_is_left(store: Store) -> None:
    writer = BatchWriter(store, settings(store_flush_seconds=3600))
    task = asyncio.create_task(writer.run())
    writer.add("case_transitions", transitions(0, 7))
    await writer.stop()
    await asyncio.wait_for(task, 10)
    assert count(store) == 7


async def test_stop_gives_up_at_its_deadline_and_keeps_the_rows(store: Store) -> None:
    writer = BatchWriter(store, settings(), retry_initial_seconds=0.05, retry_max_seconds=0.1)
    writer.add("case_transitions", transitions(0, 7))
    store.execute("RENAME TABLE case_transitions TO case_transitions_away")
    with pytest.raises(WriterStopped) as stopped:
        await writer.stop(timeout=0.5)
    assert stopped.value.pending == 7 and writer.pending == 7
    store.execute("RENAME TABLE case_transitions_away TO case_transitions")
    await writer.flush()
    assert count(store) == 7


@pytest.mark.clickhouse_server
async def test_server_stopped_and_restarted_mid_stream(tmp_path: Path) -> None:
    """Stop the real clickhouse-server while rows stream in, keep adding, restart it: all rows, once."""
    server = LocalClickHouseServer(tmp_path / "server")
    server.start()
    try:
        store = open_store(server.store_url("outage"))
        store.migrate()
        metrics = PipelineMetrics(CollectorRegistry())
        writer = BatchWriter(store, settings(store_batch_rows=200, store_flush_seconds=0.05), metrics,
                             retry_initial_seconds=0.05, retry_max_seconds=0.5)
        produced = 0

        async def produce(rows: int) -> None:
            nonlocal produced
            for _ in range(rows // 100):
                await writer.wait_for_room(100)
                writer.add("case_transitions", transitions(produced, 100))
                produced += 100
                await asyncio.sleep(0.005)

        async def body(_: asyncio.Task[None]) -> None:
            await produce(3000)
            await eventually(lambda: writer.rows_written > 0, what="first rows written")
            await asyncio.to_thread(server.stop)
            await produce(3000)  # ClickHouse is down: the writer keeps accepting
            await eventually(lambda: writer.failures > 0, what="failures while down")
            assert writer.pending > 0
            await asyncio.to_thread(server.start)
            await produce(2000)
            await eventually(lambda: writer.pending == 0, timeout=120, what="drained after restart")

        await running(writer, body)
        assert produced == 8000
        assert count(store) == 8000
        assert store.query("SELECT uniqExact(event_id) AS n FROM case_transitions")[0]["n"] == 8000
        assert metrics.registry.get_sample_value("citygrid_clickhouse_write_failures_total",
                                                 {"table": "case_transitions"}) > 0
        store.close()
    finally:
        server.stop()
