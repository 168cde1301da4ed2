"""Shared steps of the end-to-end tests: produce raw records, wait for the sink, read ClickHouse."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from streams.bus.topics import TopicNames
from streams.storage import open_store


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


def wait_settled(bootstrap: str, group_prefix: str, timeout: float = 120, quiet: float = 3.0) -> None:
    """Wait until every consumer group of the worker (ids starting with ``group_prefix``) has committed up to
    the log end on every partition it committed, twice in a row ``quiet`` seconds apart. After a kill the
    restarted sink first re-writes the rows it had not committed, so row counts alone can be met by replays
    before the new inputs went through."""
    from kafka import KafkaAdminClient

    from streams.agents.services import _group_offsets

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    behind: dict[str, int] = {}

    def lag() -> dict[str, int]:
        listed = admin.list_groups() if hasattr(admin, "list_groups") else admin.list_consumer_groups()
        groups = [str(g[0] if isinstance(g, tuple) else g.get("group_id", g.get("group")) if isinstance(g, dict)
                      else g.group_id) for g in listed]
        out: dict[str, int] = {}
        consumer.topics()  # end_offsets needs the partitions' metadata
        for group in groups:
            if not group.startswith(group_prefix):
                continue
            committed = {tp: om for tp, om in _group_offsets(admin, group).items() if om.offset >= 0}
            ends = consumer.end_offsets(list(committed)) if committed else {}
            for tp, meta in committed.items():
                if ends.get(tp, 0) > meta.offset:
                    out[f"{group} {tp.topic}[{tp.partition}]"] = ends[tp] - meta.offset
        return out

    def settled() -> bool:
        behind.clear()
        behind.update(lag())
        if behind:
            return False
        time.sleep(quiet)
        behind.update(lag())
        return not behind

    try:
        wait_until(settled, timeout, f"consumer groups {group_prefix}* at the log end", lambda: f"behind: {behind}")
    finally:
        consumer.close()
        admin.close()


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
