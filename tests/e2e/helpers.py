"""Shared steps of the end-to-end tests: produce raw records, wait for the sink, read ClickHouse."""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from kafka import KafkaConsumer, KafkaProducer

from streams.bus.topics import TopicNames
from streams.local.kafka import free_port
from streams.settings import Settings
from streams.sinks.reconcile import Reconciliation, reconcile
from streams.sinks.webhooks import verify_signature
from streams.storage import open_store


def produce(bootstrap: str, prefix: str, records: list[tuple[str, Any]]) -> None:
    """records: (logical topic, dict → JSON | bytes as is)."""
    produce_keyed(bootstrap, prefix, [(topic, None, value) for topic, value in records])


def produce_keyed(bootstrap: str, prefix: str, records: list[tuple[str, str | None, Any]]) -> None:
    """records: (logical topic, key, dict → JSON | bytes as is). Records of one key stay in order on one partition
    (a device's readings, an area's crowd counts)."""
    names = TopicNames(prefix)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic, key, value in records:
        data = value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode()
        producer.send(names.name(topic), data, key=key.encode() if key is not None else None)
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


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               on_timeout: Callable[[], str] = lambda: "") -> None:
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
        return all(metric_total(text, "citygrid_clickhouse_rows_written_total", table=t) >= n
                   for t, n in tables.items())

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

    from streams.agents.services import group_offsets

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
            committed = {tp: om for tp, om in group_offsets(admin, group).items() if om.offset >= 0}
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


def wait_reconciled(settings: Settings, store_url: str, since: int, until: int, timeout: float, what: str,
                    tail: Callable[[], str], *, inputs_only: bool = False,
                    retry_errors: bool = True) -> Reconciliation:
    """Run `streams reconcile` over [since, until] until it accounts for everything (or, with ``inputs_only``,
    for every input: the output checks left out) and return that report. With ``retry_errors`` a failing
    reconcile (ClickHouse or the broker still coming back after a fault) is tried again; without it, it
    raises. On a timeout the last report and ``tail()`` (the worker's log) explain."""
    result: list[Reconciliation] = []

    def reconciled() -> bool:
        store = open_store(store_url)
        try:
            result[:] = [reconcile(settings, store, since, until)]
        except Exception:
            if not retry_errors:
                raise
            return False
        finally:
            store.close()
        report = result[0]
        return all(t.ok for t in report.inputs) if inputs_only else report.ok

    wait_until(reconciled, timeout, what, lambda: (result[0].text() if result else "") + "\n" + tail())
    return result[0]


class WebhookReceiver:
    """Departments' endpoints on loopback (any path under one port), in their own thread and event loop.

    With a ``secret`` each request's signature is checked with streams.sinks.webhooks.verify_signature, as a
    department would: a bad one is answered 401 and counted in ``bad_signatures``; a good one is kept in
    ``hits`` (path, Idempotency-Key, parsed body) and ``bodies`` (the raw text). Without a secret every body
    is kept as is. Each accepted request is answered 204."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.port = free_port()
        self.hits: list[dict[str, Any]] = []
        self.bodies: list[str] = []
        self.bad_signatures = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def unique(self) -> list[dict[str, Any]]:
        """One hit per idempotency key (a department acts on each once)."""
        return list({h["key"]: h for h in list(self.hits)}.values())

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.secret is not None:
            if not verify_signature(self.secret, request.headers["X-Citygrid-Timestamp"], body,
                                    request.headers["X-Citygrid-Signature"]):
                self.bad_signatures += 1
                return web.Response(status=401)
            self.hits.append({"path": request.path, "key": request.headers["Idempotency-Key"],
                              "body": json.loads(body)})
        self.bodies.append(body.decode("utf-8"))
        return web.Response(status=204)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
