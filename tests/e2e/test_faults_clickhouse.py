"""Fault injection: clickhouse-server stopped for longer than the sink consumer's max poll interval,
then restarted. The worker never exits, the sink keeps its group (paused, polling), and every row
arrives exactly once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.local.clickhouse import LocalClickHouseServer
from streams.local.kafka import LocalKafka
from tests.e2e.faults import Feeder, call
from tests.e2e.helpers import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
POLL_INTERVAL = 8
OUTAGE = 3 * POLL_INTERVAL


def count(store_url: str, sql: str) -> int:
    try:
        return int(query(store_url, sql)[0]["n"])
    except Exception:
        return -1


def test_clickhouse_down_longer_than_the_poll_interval(kafka: LocalKafka, topic_prefix: str, worker_factory,
                                                       tmp_path: Path) -> None:
    server = LocalClickHouseServer(tmp_path / "clickhouse")
    server.start()
    try:
        store_url = server.store_url("outage")
        worker = worker_factory(store_url, kafka_max_poll_interval_seconds=str(POLL_INTERVAL))
        worker.wait_healthy()
        feeder = Feeder(kafka.bootstrap, topic_prefix, lambda i: ("hotline.calls", call(i, prefix="CH")),
                        rate=10).start()
        wait_until(lambda: count(store_url, "SELECT count() AS n FROM signals") >= 20, 120, "signals before",
                   worker.tail)
        server.stop()
        down = time.monotonic()
        while time.monotonic() - down < OUTAGE:
            assert worker.proc is not None and worker.proc.poll() is None, f"worker exited:\n{worker.tail()}"
            time.sleep(1)
        server.start()
        time.sleep(5)
        sent = feeder.stop()
        calls = {value["call_id"] for _, value in sent}
        assert len(calls) > 20 + OUTAGE * 5, len(calls)  # the feed went on through the outage
        wait_until(lambda: count(store_url, "SELECT count() AS n FROM signals FINAL") >= len(calls), 180,
                   f"{len(calls)} signals after the outage", worker.tail)
        assert worker.proc is not None and worker.proc.poll() is None, f"worker exited:\n{worker.tail()}"
        ids = query(store_url, "SELECT source_id, count() AS n FROM signals FINAL GROUP BY source_id")
        assert {r["source_id"] for r in ids} == calls and {r["n"] for r in ids} == {1}
        assert "output unavailable" in worker.tail(400) or "output unavailable" in worker.log_path.read_text()
        assert worker.stop() == 0, worker.tail()
    finally:
        server.stop()
