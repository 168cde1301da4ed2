"""Shared steps of the end-to-end tests: produce raw records, wait for the sink, read ClickHouse."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from streams.storage import open_store
from streams.bus.topics import TopicNames


def produce(bootstrap: str, prefix: str, records: list[tuple[str, Any]]) -> None:
    """records: (logical topic, dict → JSON | bytes as is)."""
    names = TopicNames(prefix)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic, value in records:
        data = value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()
        producer.send(names.name(topic), data)
    producer.flush()
    producer.close()


def metric_total(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(re.search(fr'{k}="{re.escape(v)}"', line) for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, on_timeout: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


def wait_rows(worker: Any, timeout: float = 120, **tables: int) -> None:
    """Wait until the worker's sink wrote at least N rows into each table (from its own metrics)."""
    def done() -> bool:
        try:
            text = worker.metrics()
        except OSError:
            return False
        return all(metric_total(text, "citygrid_clickhouse_rows_written_total", table=t) >= n for t, n in tables.items())

    def explain() -> str:
        try:
            text = worker.metrics()
        except OSError as exc:
            return f"(no metrics: {exc})\n{worker.tail()}"
        written = {t: metric_total(text, "citygrid_clickhouse_rows_written_total", table=t) for t in tables}
        return f"rows written so far: {written}\n{worker.tail()}"

    wait_until(done, timeout, f"rows {tables}", explain)


def query(store_url: str, sql: str) -> list[dict[str, Any]]:
    store = open_store(store_url)
    try:
        return store.query(sql)
    finally:
        store.close()


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=int(timeout * 1000), enable_auto_commit=False)
    out = []
    for message in consumer:
        out.append(message)
        if len(out) >= expect:
            break
    consumer.close()
    return out
