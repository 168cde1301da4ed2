"""Re-produce dead-lettered deliveries (``webhook.deliveries.dlq``) to ``webhook.deliveries``.

The DLQ is read from its beginning to its current end (no consumer group, nothing committed), filtered,
de-duplicated by idempotency key (the latest dead record wins), and each match is produced again with
attempt 1, no not-before, a fresh ``created_ms`` (a new TTL) and ``redeliveries`` + 1. The idempotency
key is unchanged, so a receiver that did get an earlier copy deduplicates it.
"""
from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from streams.bus import clients
from streams.bus.codec import DecodeError, registry
from streams.bus.topics import WEBHOOK_DELIVERIES, WEBHOOK_DLQ, TopicNames
from streams.settings import Settings


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The topic's partition ids from fresh metadata, [] if the topic does not exist."""
    admin = AIOKafkaAdminClient(**clients.metadata_admin(settings))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def read_dead_letters(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every record now in the DLQ, oldest first per partition (undecodable ones raise DecodeError)."""
    return await read_deliveries(settings, WEBHOOK_DLQ, timeout_s)


async def read_deliveries(settings: Settings, logical: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every webhook_delivery record now in a topic, from its beginning to its current end, oldest
    first per partition; [] when the topic does not exist."""
    topic = TopicNames(settings.topic_prefix).name(logical)
    partitions = await partitions_of(settings, topic)
    if not partitions:
        return []  # nothing was ever dead-lettered
    consumer = AIOKafkaConsumer(**clients.topic_reader(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    try:
                        _, record = registry().decode(message.value, expected="webhook_delivery")
                    except DecodeError as exc:
                        raise DecodeError(f"{topic}[{tp.partition}]@{message.offset}: {exc}") from exc
                    records.append(record)
        return records
    finally:
        await consumer.stop()


def select(records: list[dict[str, Any]], department: str | None = None, case_id: str | None = None,
           kind: str | None = None, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Filter and de-duplicate by idempotency key (latest dead record wins; first-seen order kept)."""
    chosen: dict[str, dict[str, Any]] = {}
    for record in records:
        if department and record["department"] != department:
            continue
        if case_id and record["case_id"] != case_id:
            continue
        if kind and record["kind"] != kind:
            continue
        if since_ms is not None and (record.get("dead_ms") or 0) < since_ms:
            continue
        chosen[record["idempotency_key"]] = record
    return list(chosen.values())


def reset(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return dict(record, attempt=1, not_before_ms=0, created_ms=now_ms, error=None, http_status=None,
                dead_ms=None, redeliveries=int(record.get("redeliveries") or 0) + 1)


async def redeliver(settings: Settings, department: str | None = None, case_id: str | None = None,
                    kind: str | None = None, since_ms: int | None = None,
                    dry_run: bool = False) -> list[dict[str, Any]]:
    """Re-produce the matching dead letters; returns the records produced (or that would be, with dry_run)."""
    chosen = select(await read_dead_letters(settings), department, case_id, kind, since_ms)
    now = int(time.time() * 1000)
    fresh = [reset(r, now) for r in chosen]
    if dry_run or not fresh:
        return fresh
    producer = AIOKafkaProducer(**clients.redelivery_producer(settings))
    await producer.start()
    try:
        topic = TopicNames(settings.topic_prefix).name(WEBHOOK_DELIVERIES)
        for record in fresh:  # in DLQ order, so a case's records keep their relative order
            await producer.send(topic, registry().encode("webhook_delivery", record),
                                key=record["case_id"].encode("utf-8"))
        await producer.flush()
    finally:
        await producer.stop()
    return fresh
