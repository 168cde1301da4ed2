"""Stateful property test of BatchWriter on both engines: whatever the order of adds, flushes,
outages and retried duplicates, nothing accepted is lost, nothing is duplicated, the bound holds."""
from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from streams.settings import Settings
from streams.storage import BackPressure, BatchWriter, WriterStopped
from streams.storage.store import Store

BUFFER = 60


def rows(ids: list[int]) -> list[dict[str, object]]:
    return [{"alert_id": f"a{i}", "case_id": "c", "ts_ms": 1_763_600_000_000 + i, "kind": "urge"} for i in ids]


class WriterMachine(RuleBasedStateMachine):
    store: Store

    @initialize()
    def start(self) -> None:
        self.store.execute("TRUNCATE TABLE sla_alerts")
        self.store.columns("sla_alerts")
        self.writer = BatchWriter(self.store, Settings(store_batch_rows=20, store_flush_seconds=3600,
                                                       store_buffer_rows=BUFFER),
                                  retry_initial_seconds=0.01, retry_max_seconds=0.02)
        self.accepted: set[int] = set()   # ids the writer took
        self.unflushed = 0                # rows accepted since the last successful flush
        self.next_id = 0
        self.broken = False

    @rule(n=st.integers(1, 25))
    def add_new(self, n: int) -> None:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        self._add(ids)

    @rule(n=st.integers(1, 10))
    def add_again(self, n: int) -> None:
        """A redelivered record: same ids as accepted ones."""
        self._add(sorted(self.accepted)[:n] or [0])

    def _add(self, ids: list[int]) -> None:
        if self.unflushed + len(ids) > BUFFER:
            with pytest.raises(BackPressure):
                self.writer.add("sla_alerts", rows(ids))
            return
        self.writer.add("sla_alerts", rows(ids))
        self.accepted.update(ids)
        self.unflushed += len(ids)

    @rule()
    def clickhouse_fails(self) -> None:
        if not self.broken:
            self.store.execute("RENAME TABLE sla_alerts TO sla_alerts_away")
            self.broken = True

    @rule()
    def clickhouse_recovers(self) -> None:
        if self.broken:
            self.store.execute("RENAME TABLE sla_alerts_away TO sla_alerts")
            self.broken = False

    @rule()
    def flush(self) -> None:
        if self.broken and self.unflushed:
            with pytest.raises(WriterStopped):
                asyncio.run(self.writer.flush(deadline=time.monotonic() + 0.05))
            return
        asyncio.run(self.writer.flush())  # nothing buffered: no INSERT, so a broken table is no error
        self.unflushed = 0
        if not self.broken:
            assert self._stored() == len(self.accepted)

    def _stored(self) -> int:
        return self.store.query("SELECT count() AS n FROM sla_alerts FINAL")[0]["n"]

    @invariant()
    def bounded_and_counted(self) -> None:
        if hasattr(self, "writer"):
            assert self.writer.pending == self.unflushed <= BUFFER

    def teardown(self) -> None:
        if not hasattr(self, "writer"):
            return
        self.clickhouse_recovers()
        asyncio.run(self.writer.flush())
        assert self._stored() == len(self.accepted)
        ids = self.store.query("SELECT uniqExact(alert_id) AS n FROM sla_alerts")[0]["n"]
        assert ids == len(self.accepted)


def test_batch_writer_state_machine(store: Store) -> None:
    WriterMachine.store = store
    run_state_machine_as_test(WriterMachine, settings=settings(
        max_examples=12, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
