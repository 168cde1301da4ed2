"""Bulk, Avro-encoded produce with one await for the whole batch (few round trips per batch)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from streams.bus.codec import SchemaRegistry
from streams.bus.records import TopicRecord, dead_letter_value, store_rows_record
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import TopicNames, dlq
from streams.core.privacy import mask_text

# Rows per store.rows message: ~200 bytes a row keeps a message well under Kafka's 1 MiB default.
STORE_ROWS_PER_MESSAGE = 2000

# send(topic, key, value, partition) -> awaitable resolving to a delivery future
SendFn = Callable[[str, bytes | None, bytes, int | None], Awaitable[Awaitable[Any]]]


def _key(key: str | None) -> bytes | None:
    return key.encode("utf-8") if key is not None else None


class Emitter:
    """Collects outgoing records for one processing batch, then sends them all and waits for acks.

    The caller acknowledges its input only after ``flush()`` returned: at-least-once end to end.
    """

    def __init__(self, send: SendFn, codec: SchemaRegistry, topics: TopicNames, schemas: dict[str, str],
                 sealer: DeadLetterSealer | None = None) -> None:
        self._send = send
        self._sealer = sealer  # encrypts dead-letter originals; required to dead-letter anything
        self._codec = codec
        self._topics = topics
        self._schemas = schemas  # logical topic -> schema name
        self._pending: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._rows: dict[str, list[Mapping[str, Any]]] = {}

    def record(self, topic: str, value: Mapping[str, Any], key: str | None = None,
               partition: int | None = None) -> None:
        data = self._codec.encode(self._schemas[topic], value)
        self._pending.append((self._topics.name(topic), _key(key), data, partition))

    def emit(self, records: Iterable[TopicRecord]) -> None:
        for rec in records:
            self.record(rec.topic, rec.value, rec.key)

    def raw(self, physical_topic: str, data: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        self._pending.append((physical_topic, key, data, partition))

    def rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows for a table that has no topic of its own: sent as one store.rows message per table."""
        self._rows.setdefault(table, []).extend(rows)

    def dead_letter(self, logical_topic: str, partition: int, offset: int, reason: str, ts_ms: int,
                    original: bytes | None, key: bytes | None) -> None:
        """The original bytes and key are sealed (Fernet, streams.bus.sealing); the reason is masked
        (a validation message may quote a field). The dead-letter record has no Kafka key: the
        original key may itself be personal data."""
        if self._sealer is None:
            raise RuntimeError("dead-lettering needs a DeadLetterSealer (CITYGRID_DLQ_KEY)")
        value = dead_letter_value(logical_topic, partition, offset, mask_text(reason), ts_ms,
                                  self._sealer.seal(bytes(original or b"")),
                                  self._sealer.seal(bytes(key)) if key is not None else None)
        data = self._codec.encode("dead_letter", value)
        self._pending.append((self._topics.name(dlq(logical_topic)), None, data, None))

    def __len__(self) -> int:
        return len(self._pending) + len(self._rows)

    async def flush(self) -> int:
        # many rows per store.rows message, but never one over the broker's message size (a closing minute of a
        # city's devices is tens of thousands of rows)
        self.emit(store_rows_record(table, rows[i:i + STORE_ROWS_PER_MESSAGE])
                  for table, rows in self._rows.items() for i in range(0, len(rows), STORE_ROWS_PER_MESSAGE))
        self._rows = {}
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        futures = [await self._send(topic, key, value, partition) for topic, key, value, partition in pending]
        await asyncio.gather(*futures)
        return len(pending)
