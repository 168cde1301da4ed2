"""``WebhookDeliverer``: at-least-once HTTP delivery of the ``webhook.deliveries`` topic.

How the guarantees are kept (details in docs/webhooks.md):

* **At-least-once.** A lean aiokafka consumer (auto-commit off) reads delivery records. An offset is
  committed only when every record up to it has a durable outcome: delivered (2xx), or written to
  ``webhook.deliveries.dlq`` (acks=all). Retries are held in memory; a crash re-reads every record
  without an outcome, so a record is never lost, and may be delivered twice (receivers deduplicate on
  the idempotency key).
* **Per-case ordering.** Records are keyed by case id, so a case's events share a partition and arrive
  in order. Each (case, department) pair is a *lane* that delivers one record at a time; a later event
  waits for the earlier one's outcome, also across restarts (offsets are committed contiguously).
* **Isolation.** Lanes are independent tasks; each endpoint has its own concurrency limit, token
  bucket, Retry-After pause and circuit breaker, so a slow or dead endpoint only holds its own lanes.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.bus.codec import DecodeError, registry
from streams.bus.emit import producer_broken
from streams.bus.topics import WEBHOOK_DELIVERIES, WEBHOOK_DLQ, TopicNames
from streams.settings import Settings
from streams.sinks.webhooks.config import Endpoint, WebhooksConfig
from streams.sinks.webhooks.metrics import DeliveryMetrics, PrometheusWebhookMetrics
from streams.sinks.webhooks.policy import (
    CircuitBreaker,
    EndpointState,
    Outcome,
    TokenBucket,
    backoff_seconds,
    classify_status,
    parse_retry_after,
)
from streams.sinks.webhooks.signing import signed_headers

# PrometheusWebhookMetrics lives in metrics.py; re-exported because streams/agents/services.py imports it from here.
__all__ = ["AttemptResult", "PrometheusWebhookMetrics", "Sink", "WebhookDeliverer"]

log = logging.getLogger(__name__)

Sink = Callable[[str, list[dict[str, Any]]], Any]  # sink(table, rows); may return an awaitable


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class AttemptResult:
    outcome: Outcome
    http_status: int = 0
    error: str = ""
    retry_after_s: float | None = None
    latency_s: float = 0.0


@dataclass
class _Item:
    record: dict[str, Any]
    tp: TopicPartition
    offset: int


@dataclass
class _Lane:
    """The records of one (case, department), delivered strictly one after another."""

    tp: TopicPartition
    queue: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task | None = None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, deliverer: WebhookDeliverer) -> None:
        self.deliverer = deliverer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.deliverer._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.deliverer._on_assigned(list(assigned))


class WebhookDeliverer:
    """Consumes ``webhook.deliveries`` and delivers each record to its department's endpoint.

    ``sink(table, rows)`` receives one ``webhook_deliveries`` row per attempt (and ``dead_letters`` rows
    for undecodable records); it may be a plain function or a coroutine function (e.g. BatchWriter.add).
    """

    def __init__(
        self,
        settings: Settings,
        config: WebhooksConfig,
        metrics: DeliveryMetrics | None = None,
        sink: Sink | None = None,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics
        self.sink = sink
        names = TopicNames(settings.topic_prefix)
        self.topic = names.name(WEBHOOK_DELIVERIES)
        self.dlq_topic = names.name(WEBHOOK_DLQ)
        self.group_id = group_id or f"{settings.app_id}-webhooks"
        self._endpoints: dict[str, EndpointState] = {}
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._paused = False
        self.started = asyncio.Event()  # set once the consumer has joined (tests wait on it)

    # ---- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume and deliver until ``stop()``."""
        from streams.bus import clients

        self._consumer = AIOKafkaConsumer(**clients.delivery_consumer(self.settings, self.group_id))
        self._producer = AIOKafkaProducer(**clients.delivery_producer(self.settings, self.group_id))
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            await self._producer.start()
            await self._consumer.start()
            self._consumer.subscribe([self.topic], listener=_Rebalance(self))
            last_commit = time.monotonic()
            while not self._stopping.is_set():
                try:
                    batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                except Exception as exc:  # broker away: keep going (deliveries in flight carry on)
                    log.warning("webhook deliveries: fetch failed: %s", exc)
                    await asyncio.sleep(1)
                    continue
                if not self.started.is_set() and self._consumer.assignment():
                    self.started.set()
                for tp, messages in batch.items():
                    for message in messages:
                        self._accept(tp, message)
                self._apply_backpressure()
                if time.monotonic() - last_commit >= self.config.commit_interval_seconds:
                    await self._commit()
                    last_commit = time.monotonic()
        finally:
            await self._shutdown()

    async def stop(self) -> None:
        """Stop consuming; records without an outcome stay uncommitted and are re-read on restart."""
        self._stopping.set()
        if self._consumer is not None:
            await self._stopped.wait()

    async def _shutdown(self) -> None:
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        try:
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._commit()
                await self._consumer.stop()
        finally:
            if self._producer is not None:
                await self._producer.stop()
            if self._http is not None:
                await self._http.close()
            self._stopped.set()

    # ---- consuming and offsets ------------------------------------------------------------
    def _accept(self, tp: TopicPartition, message: ConsumerRecord) -> None:
        self._next_offset[tp] = message.offset + 1
        try:
            _, record = registry().decode(message.value, expected="webhook_delivery")
            key = (record["case_id"], record["department"])
        except Exception as exc:  # DecodeError (a tombstone too), or a record without its keys: one dead letter
            self._undecodable(tp, message, str(exc) if isinstance(exc, DecodeError) else f"unreadable: {exc!r}")
            return
        self._pending.setdefault(tp, set()).add(message.offset)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(tp)
        lane.queue.append(_Item(record, tp, message.offset))
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane), name=f"webhook-lane-{key[0]}-{key[1]}")
        self._report_pending()

    def _undecodable(self, tp: TopicPartition, message: ConsumerRecord, reason: str) -> None:
        """Not a webhook_delivery record: nothing to deliver; recorded (log + dead_letters row), then skipped."""
        log.error("undecodable record %s[%d]@%d: %s", tp.topic, tp.partition, message.offset, reason)
        if self.metrics:
            self.metrics.webhook_dead("", "", "undecodable")
        original = (message.value or b"").decode("utf-8", errors="backslashreplace")
        self._to_sink("dead_letters", [{
            "topic": tp.topic, "partition": tp.partition, "offset": message.offset, "reason": reason,
            "ts_ms": message.timestamp or now_ms(), "original": original,
            "key": (message.key or b"").decode("utf-8", "replace"),
        }])

    def _report_pending(self) -> None:
        if self.metrics:
            self.metrics.webhook_pending(sum(len(s) for s in self._pending.values()))

    def _committable(self, tp: TopicPartition) -> int | None:
        """The offset up to which every record of ``tp`` has an outcome."""
        pending = self._pending.get(tp)
        if pending:
            return min(pending)
        return self._next_offset.get(tp)

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp in partitions if partitions is not None else list(self._next_offset):
            position = self._committable(tp)
            if position is not None and position > self._committed.get(tp, -1):
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # a rebalance in progress: the next commit (or the new owner) catches up
            log.warning("offset commit failed (%s); records may be delivered again after a restart", exc)
            return
        self._committed.update(offsets)

    def _apply_backpressure(self) -> None:
        """Bound memory: pause fetching while too many records await an outcome."""
        assert self._consumer is not None
        count = sum(len(s) for s in self._pending.values())
        if not self._paused and count >= self.config.max_pending:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning("%d webhook deliveries pending: fetching paused", count)
        elif self._paused and count < self.config.max_pending // 2:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(revoked)
        gone = set(revoked)
        cancelled = []
        for key, lane in list(self._lanes.items()):
            if lane.tp in gone:
                if lane.task is not None:
                    lane.task.cancel()
                    cancelled.append(lane.task)
                del self._lanes[key]
        await asyncio.gather(*cancelled, return_exceptions=True)
        for tp in gone:
            self._pending.pop(tp, None)
            self._next_offset.pop(tp, None)
            self._committed.pop(tp, None)
        self._report_pending()

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._paused and self._consumer is not None:
            self._consumer.pause(*assigned)

    # ---- delivering -----------------------------------------------------------------------
    async def _drain(self, key: tuple[str, str], lane: _Lane) -> None:
        try:
            while lane.queue:
                item = lane.queue[0]
                try:
                    await self._deliver(item.record)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug, not an endpoint failure: this record is dead-lettered, the
                    # lane goes on (a stalled lane would hold every later record of the case)
                    log.exception("webhook lane %s: internal error on %s", key, item.record.get("delivery_id"))
                    await self._dead_letter(item.record, max(1, int(item.record.get("attempt") or 1)),
                                            "internal_error", repr(exc), 0)
                lane.queue.popleft()
                self._pending.get(item.tp, set()).discard(item.offset)
                self._report_pending()
        except asyncio.CancelledError:
            raise
        except Exception:  # even the dead letter failed: keep the record uncommitted and say so loudly
            log.exception("webhook lane %s stopped; its records stay uncommitted until restart", key)
        finally:
            # after a bug the lane stays (with its queue) so later records of the case cannot overtake
            if not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]

    def _endpoint_state(self, department: str, endpoint: Endpoint) -> EndpointState:
        state = self._endpoints.get(department)
        if state is None or state.endpoint is not endpoint:
            metrics = self.metrics  # a local: mypy keeps its None test's narrowing inside the lambda
            on_change = (lambda is_open: metrics.webhook_breaker(department, is_open)) if metrics else None
            state = self._endpoints[department] = EndpointState(
                endpoint, asyncio.Semaphore(endpoint.max_in_flight),
                TokenBucket(endpoint.rate_per_second, endpoint.burst),
                CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset_seconds, on_change),
            )
        return state

    async def _deliver(self, record: dict[str, Any]) -> None:
        """Returns once the record has a durable outcome: delivered or dead-lettered."""
        department, kind = record["department"], record["kind"]
        attempt = max(1, int(record["attempt"]))
        expires_ms = record["created_ms"] + int(self.config.ttl_seconds * 1000)
        endpoint = self.config.endpoints.get(department)
        if endpoint is None:
            error = f"no endpoint configured for {department}"
            self._attempt_row(record, attempt, "dead", AttemptResult("failed", 0, error))
            await self._dead_letter(record, attempt, "no_endpoint", error, 0)
            return
        state = self._endpoint_state(department, endpoint)
        if (wait_ms := record["not_before_ms"] - now_ms()) > 0:
            await asyncio.sleep(wait_ms / 1000)
        while True:
            await state.wait_ready()
            if now_ms() >= expires_ms:
                state.breaker.release()
                error = "TTL expired before delivery"
                self._attempt_row(record, attempt, "dead", AttemptResult("failed", 0, error))
                await self._dead_letter(record, attempt, "ttl", error, 0)
                return
            try:
                async with state.in_flight:
                    result = await self._post(endpoint, record, attempt)
            except BaseException:
                state.breaker.release()  # a probe cancelled without a verdict: let another caller probe
                raise
            if result.outcome == "retry" and result.http_status != 429:
                state.breaker.failure()
            else:
                state.breaker.success()  # 2xx, 4xx and 429 show the endpoint is alive
            if result.retry_after_s is not None:
                pause = min(result.retry_after_s, self.config.retry_after_max_seconds)
                state.paused_until = max(state.paused_until, time.monotonic() + pause)
            status: str = result.outcome  # delivered | retry | failed (4xx, dead-lettered) | dead (given up)
            final = result.outcome != "retry" or attempt >= self.config.max_attempts
            delay = 0.0
            if result.outcome == "retry" and not final:
                delay = (min(result.retry_after_s, self.config.retry_after_max_seconds)
                         if result.retry_after_s is not None
                         else backoff_seconds(attempt, self.config.backoff_initial_seconds,
                                              self.config.backoff_max_seconds))
                if now_ms() + delay * 1000 >= expires_ms:
                    final = True
            if result.outcome == "retry" and final:
                status = "dead"
            self._attempt_row(record, attempt, status, result)
            if self.metrics:
                self.metrics.webhook_attempt(department, kind, status, result.http_status, result.latency_s)
            if result.outcome == "delivered":
                if self.metrics:
                    self.metrics.webhook_delivered(department, kind, (now_ms() - record["created_ms"]) / 1000)
                return
            if result.outcome == "failed":
                await self._dead_letter(record, attempt, f"http_{result.http_status}", result.error, result.http_status)
                return
            if final:
                reason = "max_attempts" if attempt >= self.config.max_attempts else "ttl"
                await self._dead_letter(record, attempt, reason, result.error, result.http_status)
                return
            log.info("webhook %s to %s attempt %d failed (%s); retrying in %.2fs",
                     record["delivery_id"], department, attempt, result.error, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _post(self, endpoint: Endpoint, record: dict[str, Any], attempt: int) -> AttemptResult:
        assert self._http is not None
        body = record["payload"].encode("utf-8")
        headers = signed_headers(endpoint.signing_secrets, body, record["idempotency_key"], attempt, record["kind"],
                                 record["delivery_id"])
        started = time.perf_counter()
        try:
            async with self._http.post(endpoint.url, data=body, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=endpoint.timeout_seconds)) as response:
                await response.read()
                latency = time.perf_counter() - started
                outcome = classify_status(response.status)
                retry_after = None
                if response.status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                error = "" if outcome == "delivered" else f"HTTP {response.status}"
                return AttemptResult(outcome, response.status, error, retry_after, latency)
        except TimeoutError:
            return AttemptResult("retry", 0, f"timeout after {endpoint.timeout_seconds}s",
                                 None, time.perf_counter() - started)
        except aiohttp.ClientError as exc:
            return AttemptResult("retry", 0, f"{type(exc).__name__}: {exc}", None, time.perf_counter() - started)

    async def _dead_letter(self, record: dict[str, Any], attempt: int, reason: str, error: str,
                           http_status: int) -> None:
        """Write to the dead-letter topic and wait for the broker's ack; retried until it succeeds."""
        assert self._producer is not None
        dead = dict(record, attempt=attempt, error=f"{reason}: {error}" if error else reason,
                    http_status=http_status or None, dead_ms=now_ms())
        value = registry().encode("webhook_delivery", dead)
        pause = 0.5
        while True:
            try:
                await self._producer.send_and_wait(self.dlq_topic, value, key=record["case_id"].encode("utf-8"))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker unavailable: the offset stays uncommitted meanwhile
                log.warning("dead-letter write failed (%s); retrying in %.1fs", exc, pause)
                if producer_broken(exc):   # its idempotence state lost in the outage: only a new one can send
                    await self._renew_producer()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
        log.warning("webhook %s to %s dead-lettered: %s", record["delivery_id"], record["department"], dead["error"])
        if self.metrics:
            self.metrics.webhook_dead(record["department"], record["kind"], reason)

    async def _renew_producer(self) -> None:
        from streams.bus import clients

        old, self._producer = self._producer, AIOKafkaProducer(**clients.delivery_producer(self.settings,
                                                                                            self.group_id))
        with contextlib.suppress(Exception):
            if old is not None:
                await asyncio.wait_for(old.stop(), timeout=10)
        with contextlib.suppress(Exception):
            await self._producer.start()   # broker still away: send_and_wait fails and we come back here

    def _attempt_row(self, record: dict[str, Any], attempt: int, status: str, result: AttemptResult) -> None:
        self._to_sink("webhook_deliveries", [{
            "delivery_id": record["delivery_id"], "department": record["department"], "case_id": record["case_id"],
            "kind": record["kind"], "idempotency_key": record["idempotency_key"], "attempt": attempt,
            "status": status, "http_status": result.http_status, "latency_ms": round(result.latency_s * 1000, 3),
            "ts_ms": now_ms(), "error": result.error,
        }])

    def _to_sink(self, table: str, rows: list[dict[str, Any]]) -> None:
        if self.sink is None:
            return
        try:
            result = self.sink(table, rows)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_log_sink_failure)
        except Exception as exc:  # ClickHouse trouble must not stop deliveries; the outcome is in Kafka
            log.warning("webhook sink (%s) failed: %s", table, exc)


def _log_sink_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("webhook sink failed: %s", task.exception())
