"""The Emitter's records sent in per-partition batches on one aiokafka producer.

``AIOKafkaProducer.send`` costs per record a metadata lookup (``partitions_for_topic``), a future, an
accumulator append and, on the ack, the resolution of that future: as much CPU as the domain work of a
record on the lean case path (docs/performance.md). Here the partition of each record is computed once
by the same partitioner Kafka's clients use (murmur2 of the key, so a key lands where ``send`` put it;
a record without key on a random available partition), the records of one partition are appended to
``create_batch()`` builders in order, and each builder goes out with one ``send_batch``: one future per
batch. The producer's settings stay what they were (acks=all, idempotence: the sender stamps producer id
and sequence on these batches as on its own).

A builder holds at most the producer's ``max_batch_size``, except that its first record always fits: a
record larger than a batch travels alone, so a broker refusing it (too large) refuses nothing else.
When a batch of a partition cannot be queued, the later batches of that partition are not sent either:
the retry sends them in their order (a compacted changelog keeps the last record of a key).
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

# (physical topic, key, value, partition or None)
Pending = tuple[str, bytes | None, bytes | None, int | None]

_HASH_CACHE_LIMIT = 50_000   # keys whose murmur2 is kept (a few MB at most)


class PartitionedSender:
    """``await sender(records)`` → per record None (acknowledged) or the exception it met.

    ``producer_of()`` returns the started producer (making one after an outage); its failure fails
    every record of the call."""

    def __init__(self, producer_of: Callable[[], Awaitable[Any]]) -> None:
        self._producer_of = producer_of
        self._hashes: dict[bytes, int] = {}   # key -> positive murmur2 (keys repeat: a case's records share it)

    def partition_of(self, key: bytes | None, partitions: Sequence[int], available: Sequence[int]) -> int:
        """Kafka's default partitioner (aiokafka's DefaultPartitioner, the Java client's for keyed records)."""
        if key is None:
            return random.choice(available or partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            from aiokafka.partitioner import murmur2

            if len(self._hashes) >= _HASH_CACHE_LIMIT:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]

    async def __call__(self, records: Sequence[Pending]) -> list[BaseException | None]:
        results: list[BaseException | None] = [None] * len(records)
        if not records:
            return results
        try:
            producer = await self._producer_of()
        except Exception as exc:   # broker away: nothing can be sent
            return [exc] * len(records)
        groups = await self._group(producer, records, results)
        sends = [self._send_partition(producer, topic, partition, records, indices, results)
                 for (topic, partition), indices in groups.items()]
        waiting: list[tuple[list[int], Any]] = []
        for queued in await asyncio.gather(*sends):
            waiting.extend(queued)
        acks = await asyncio.gather(*(future for _, future in waiting), return_exceptions=True)
        for (indices, _), ack in zip(waiting, acks, strict=True):
            if isinstance(ack, BaseException):
                for i in indices:
                    results[i] = ack
        return results

    async def _group(self, producer: Any, records: Sequence[Pending],
                     results: list[BaseException | None]) -> dict[tuple[str, int], list[int]]:
        """Record indices by (topic, partition), in order; a record whose topic has no metadata gets its error."""
        topics: dict[str, tuple[list[int], frozenset[int], list[int]] | BaseException] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (topic, key, value, partition) in enumerate(records):
            known = topics.get(topic)
            if known is None:
                try:
                    every = sorted(await producer.partitions_for(topic))
                    available = sorted(producer.client.cluster.available_partitions_for_topic(topic) or ())
                    known = topics[topic] = (every, frozenset(every), available)
                except Exception as exc:   # no metadata: the broker is away, or no such topic
                    known = topics[topic] = exc
            if isinstance(known, BaseException):
                results[i] = known
                continue
            every, members, available = known
            if key is None and value is None:
                results[i] = ValueError("a record needs a key or a value")
                continue
            if partition is None:
                partition = self.partition_of(key, every, available)
            elif partition not in members:
                results[i] = ValueError(f"{topic} has no partition {partition}")
                continue
            groups.setdefault((topic, partition), []).append(i)
        return groups

    async def _send_partition(self, producer: Any, topic: str, partition: int, records: Sequence[Pending],
                              indices: list[int], results: list[BaseException | None]) -> list[tuple[list[int], Any]]:
        """Queue the records of one partition as batches, in order; (record indices, ack future) per batch."""
        queued: list[tuple[list[int], Any]] = []
        batches: list[tuple[Any, list[int]]] = []
        builder = producer.create_batch()
        members: list[int] = []
        for i in indices:
            _, key, value, _ = records[i]
            if builder.append(timestamp=None, key=key, value=value) is None:   # full: the next batch
                batches.append((builder, members))
                builder, members = producer.create_batch(), []
                builder.append(timestamp=None, key=key, value=value)   # the first record always fits
            members.append(i)
        batches.append((builder, members))
        failed: BaseException | None = None
        for builder, members in batches:
            if failed is None:
                try:
                    queued.append((members, await producer.send_batch(builder, topic, partition=partition)))
                    continue
                except Exception as exc:   # accumulator closed or full past the timeout, producer broken
                    failed = exc
            for i in members:
                results[i] = failed
        return queued
