"""Fault injection: the Kafka broker stopped for 60 s mid-stream and started again. The worker never
exits, catches up, and `streams reconcile` accounts for every input exactly once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.local.kafka import LocalKafka
from streams.settings import Settings
from tests.e2e.faults import Feeder, call, now_iso
from tests.e2e.helpers import query, wait_reconciled

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
OUTAGE = 60.0


def make_record(i: int) -> tuple[str, dict]:
    if i % 3 == 2:
        return "iot.readings", {"device_id": "HB-WK-T01", "ts": now_iso(), "metric": "tilt_permille", "value": 0.5}
    return "hotline.calls", call(i, prefix="B")


def test_broker_down_for_a_minute(kafka: LocalKafka, tmp_path: Path, topic_prefix: str, worker_factory,
                                  store_url_factory) -> None:
    broker = LocalKafka(tmp_path / "own-kafka")  # this test's own broker: the session's one stays up
    broker.start()
    try:
        store_url = store_url_factory("server")
        worker = worker_factory(store_url, kafka_bootstrap=broker.bootstrap)
        worker.wait_healthy()
        since = int(time.time() * 1000) - 1000
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=topic_prefix)
        feeder = Feeder(broker.bootstrap, topic_prefix, make_record, rate=25).start()
        time.sleep(15)
        broker.stop()
        down = time.monotonic()
        while time.monotonic() - down < OUTAGE:
            assert worker.proc is not None and worker.proc.poll() is None, f"worker exited:\n{worker.tail()}"
            time.sleep(1)
        broker.start()
        time.sleep(15)
        sent = feeder.stop()
        until = int(time.time() * 1000) + 1000
        report = wait_reconciled(settings, store_url, since, until, 300, "a reconciled pipeline", worker.tail)
        print(report.text())
        assert worker.proc is not None and worker.proc.poll() is None, f"worker exited:\n{worker.tail()}"
        calls = {value["call_id"] for topic, value in sent if topic == "hotline.calls"}
        signals = {r["source_id"] for r in query(store_url, "SELECT source_id FROM signals FINAL")}
        assert calls <= signals, sorted(calls - signals)[:10]
        assert worker.stop() == 0, worker.tail()
    finally:
        broker.stop()
