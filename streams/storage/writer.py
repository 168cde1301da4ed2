"""Batched, retried, bounded writes to ClickHouse.

Rows are validated when added (a bad row is the caller's bug and raises at once), buffered per
table, and written with one INSERT per table per flush, at ``store_batch_rows`` rows or every
``store_flush_seconds``. A failed INSERT is retried with backoff, the same batch again: every
table is a ReplacingMergeTree with idempotent keys, so a batch the server half-applied before
failing leaves no duplicate in the FINAL queries. While ClickHouse is down the buffer keeps
accepting up to ``store_buffer_rows`` (counting rows in flight); beyond that :meth:`add` raises
:class:`BackPressure` and :meth:`wait_for_room` lets an agent slow down instead.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.storage.store import Store

log = logging.getLogger(__name__)


class BackPressure(RuntimeError):
    """The buffer is full (ClickHouse slow or down): slow down, e.g. ``await writer.wait_for_room(n)``."""


class WriterStopped(RuntimeError):
    """``stop()`` could not write everything before its deadline; ``pending`` rows are still buffered."""

    def __init__(self, message: str, pending: int) -> None:
        super().__init__(message)
        self.pending = pending


class BatchWriter:
    def __init__(self, store: Store, settings: Settings, metrics: PipelineMetrics | None = None,
                 retry_initial_seconds: float = 0.1, retry_max_seconds: float = 5.0) -> None:
        self.store = store
        self.batch_rows = settings.store_batch_rows
        self.flush_seconds = settings.store_flush_seconds
        self.buffer_rows = settings.store_buffer_rows
        self.metrics = metrics
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self._lock = threading.Lock()
        self._buffers: dict[str, list[list[Any]]] = {}
        self._in_flight = 0          # rows taken out of the buffers by a flush not yet written
        self._flush_lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._stopping = False
        self._stop_deadline: float | None = None
        self.failures = 0            # failed INSERT attempts since start (also a metric)
        self.rows_written = 0
        if metrics:
            metrics.store_buffer_capacity.set(self.buffer_rows)

    # -- producer side -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Rows accepted but not yet written (buffered + in flight)."""
        with self._lock:
            return self._buffered_unlocked() + self._in_flight

    def _buffered_unlocked(self) -> int:
        return sum(len(rows) for rows in self._buffers.values())

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Accept all rows or none: raises RowError for a bad row, BackPressure when full."""
        if not rows:
            return
        values = [self.store.normalize(table, row) for row in rows]
        with self._lock:
            total = self._buffered_unlocked() + self._in_flight
            if total + len(values) > self.buffer_rows:
                if self.metrics:
                    self.metrics.store_backpressure.inc()
                raise BackPressure(f"batch writer full: {total} rows pending, {len(values)} more would exceed "
                                   f"store_buffer_rows={self.buffer_rows}")
            buffer = self._buffers.setdefault(table, [])
            buffer.extend(values)
            full = len(buffer) >= self.batch_rows
            pending = total + len(values)
        if self.metrics:
            self.metrics.store_buffered_rows.set(pending)
        if full and self._wake is not None:
            self._wake.set()

    async def wait_for_room(self, rows: int = 1) -> None:
        """Return once ``rows`` more rows fit in the buffer."""
        if rows > self.buffer_rows:
            raise ValueError(f"{rows} rows can never fit in store_buffer_rows={self.buffer_rows}")
        room = self._condition()
        async with room:
            await room.wait_for(lambda: self.pending + rows <= self.buffer_rows)

    # -- flushing ----------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._room is None:
            self._room = asyncio.Condition()
        return self._room

    async def run(self) -> None:
        """Flush by size or interval until :meth:`stop`."""
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                break
            try:
                await self.flush()
            except WriterStopped:
                break  # stop() is in charge now

    async def flush(self, deadline: float | None = None) -> None:
        """Write everything buffered now, one INSERT per table, retrying until written.

        With a ``deadline`` (time.monotonic()) it gives up at that time, putting the unwritten
        rows back, and raises WriterStopped.
        """
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            with self._lock:
                batches = {table: rows for table, rows in self._buffers.items() if rows}
                self._buffers = {}
                self._in_flight += sum(len(rows) for rows in batches.values())
            for table, rows in batches.items():
                try:
                    await self._write_with_retry(table, rows, deadline)
                except BaseException:  # deadline, cancellation: nothing accepted is lost
                    self._requeue(batches, table)
                    raise
                with self._lock:
                    self._in_flight -= len(rows)
                    pending = self._buffered_unlocked() + self._in_flight
                if self.metrics:
                    self.metrics.store_buffered_rows.set(pending)
                room = self._condition()
                async with room:
                    room.notify_all()

    def _requeue(self, batches: dict[str, list[list[Any]]], from_table: str) -> None:
        """Put the unwritten batches (from_table onwards) back in front of newer rows."""
        tables = list(batches)
        with self._lock:
            for table in tables[tables.index(from_table):]:
                rows = batches[table]
                self._in_flight -= len(rows)
                self._buffers[table] = rows + self._buffers.get(table, [])

    async def _write_with_retry(self, table: str, rows: list[list[Any]], deadline: float | None) -> None:
        delay = self.retry_initial_seconds
        while True:
            if deadline is None:
                deadline = self._stop_deadline
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.store.insert_normalized, table, rows)
            except Exception as exc:  # any transport/server failure: keep the batch, try again
                self.failures += 1
                if self.metrics:
                    self.metrics.store_write_failures.labels(table=table).inc()
                log.warning("INSERT of %d rows into %s failed (%s); retrying in %.1fs", len(rows), table,
                            str(exc).splitlines()[0], delay)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise WriterStopped(f"could not write {table} before the deadline: {exc}", self.pending) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            self.rows_written += len(rows)
            if self.metrics:
                self.metrics.store_write_seconds.labels(table=table).observe(time.perf_counter() - started)
                self.metrics.store_batch_rows.labels(table=table).observe(len(rows))
                self.metrics.store_rows_written.labels(table=table).inc(len(rows))
            return

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop :meth:`run` and write what is left; raises WriterStopped if that takes over ``timeout``."""
        self._stopping = True
        self._stop_deadline = time.monotonic() + timeout
        if self._wake is not None:
            self._wake.set()
        await self.flush(deadline=self._stop_deadline)
