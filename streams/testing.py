"""An in-memory bus for tests, after bytewax's ``TestingSource``/``TestingSink``: a list of
``(topic, key, value)`` input records goes through an agent adapter, and what it produced comes back
decoded, per logical topic. No Kafka, no Faust: an adapter's whole test is input list → adapter →
output list.

    source = TestingSource([(HOTLINE_CALLS, "C-1", call), (HOTLINE_CALLS, None, b"garbage")])
    sink = await run(adapter.handle, source)
    sink.values(CASE_INPUTS), sink.values(dlq(HOTLINE_CALLS)), sink.table_rows()

Input values: a dict is encoded as the topic's Avro single-object record (``encoding="json"``: as
JSON, which raw feeds also accept); bytes pass through untouched (garbage, hand-made JSON, ...).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.structs import ConsumerRecord

from streams.bus import records
from streams.bus.codec import SchemaRegistry, registry
from streams.bus.emit import Emitter
from streams.bus.records import Inbound
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import INTERNAL_SCHEMAS, RAW_SCHEMAS, STORE_ROWS, TopicNames

SCHEMAS = {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}

Key = str | bytes | None
InputRecord = tuple[str, Key, dict[str, Any] | bytes | None] | tuple[str, Key, dict[str, Any] | bytes | None, int]
Handle = Callable[[list[Any], Emitter], Awaitable[None]]  # adapter.handle, LeanIngest.process, ...


def schema_of(topic: str) -> str:
    """The schema a logical topic carries; dead-letter topics carry dead_letter records."""
    if topic in SCHEMAS:
        return SCHEMAS[topic]
    if topic.endswith(".dlq"):
        return "dead_letter"
    raise KeyError(f"no schema for topic {topic!r}")


def _key_bytes(key: Key) -> bytes | None:
    return key.encode("utf-8") if isinstance(key, str) else key


class TestingSource:
    """Input records as a Kafka reader would hand them over: physical topic names (under ``prefix``),
    offsets counted per topic partition, the given partition (default 0) and timestamp."""

    __test__ = False  # not a pytest test class

    def __init__(self, items: Iterable[InputRecord], *, prefix: str = "", encoding: Literal["avro", "json"] = "avro",
                 timestamp_ms: int | None = None, codec: SchemaRegistry | None = None) -> None:
        self.names = TopicNames(prefix)
        self.prefix = prefix
        codec = codec or registry()
        offsets: dict[tuple[str, int], int] = {}
        self.inbound: list[Inbound] = []
        for item in items:
            topic, key, value = item[0], item[1], item[2]
            partition = item[3] if len(item) == 4 else 0
            if isinstance(value, dict):
                value = (json.dumps(value, ensure_ascii=False).encode("utf-8") if encoding == "json"
                         else codec.encode(schema_of(topic), value))
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            self.inbound.append(Inbound(self.names.name(topic), partition, offset, timestamp_ms, _key_bytes(key),
                                        bytes(value) if value is not None else None))

    def __len__(self) -> int:
        return len(self.inbound)

    def consumer_records(self) -> list[ConsumerRecord]:
        """The same records as aiokafka hands them to a lean batch consumer."""
        return [ConsumerRecord(topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp_ms or 0,
                               timestamp_type=0, key=r.key, value=r.value, checksum=None,
                               serialized_key_size=len(r.key) if r.key is not None else -1,
                               serialized_value_size=len(r.value) if r.value is not None else -1, headers=())
                for r in self.inbound]

    def batches(self, size: int | None = None, consumer_records: bool = False) -> Iterator[list[Any]]:
        items: list[Any] = self.consumer_records() if consumer_records else list(self.inbound)
        size = size or max(1, len(items))
        for start in range(0, len(items), size):
            yield items[start:start + size]


@dataclass(frozen=True)
class Produced:
    """One record an adapter produced, decoded."""

    topic: str                 # logical topic
    key: str | bytes | None    # text when it is UTF-8
    value: dict[str, Any]
    schema: str
    partition: int | None      # only when the producer chose one (the clock ticks)


class TestingSink:
    """Collects what Emitters built by :meth:`emitter` send; every send is acknowledged at once."""

    __test__ = False

    def __init__(self, *, prefix: str = "", codec: SchemaRegistry | None = None, ledger: bool = False) -> None:
        self.names = TopicNames(prefix)
        # The input ledger (one input_ledger row per input, for `streams reconcile`) as the worker writes
        # it; off by default so that a test sees just the adapter's own outputs.
        self.ledger = ledger
        self.codec = codec or registry()
        # Dead-letter originals are sealed as in the worker; produced() opens them (as `streams dlq show`
        # does), sealed_dead_letters() shows them as they travel.
        self.sealer = DeadLetterSealer.ephemeral()
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []  # (physical topic, key, value, partition)
        self.flushes = 0

    def emitter(self) -> Emitter:
        async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Awaitable[None]:
            self.sent.append((topic, key, value, partition))
            acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            acked.set_result(None)
            return acked

        return Emitter(send, self.codec, self.names, SCHEMAS, sealer=self.sealer, ledger=self.ledger)

    def produced(self, topic: str | None = None, opened: bool = True) -> list[Produced]:
        """Everything sent, decoded, in send order (only ``topic``'s records when given); dead-letter
        originals opened unless ``opened`` is False (then as sealed on the topic)."""
        out = []
        for physical, key, value, partition in self.sent:
            logical = self.names.logical(physical)
            if topic is not None and logical != topic:
                continue
            schema, record = self.codec.decode(value)
            if schema == "dead_letter" and opened:
                record = {**record, "original": self.sealer.open(record["original"]),
                          "key": self.sealer.open(record["key"]) if record.get("key") is not None else None}
            out.append(Produced(logical, _text_key(key), record, schema, partition))
        return out

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [p.value for p in self.produced(topic)]

    def keys(self, topic: str) -> list[str | bytes | None]:
        return [p.key for p in self.produced(topic)]

    def counts(self) -> dict[str, int]:
        """Records per logical topic."""
        counts: dict[str, int] = {}
        for physical, _, _, _ in self.sent:
            logical = self.names.logical(physical)
            counts[logical] = counts.get(logical, 0) + 1
        return counts

    def store_rows(self, table: str) -> list[dict[str, Any]]:
        """Rows sent for ``table`` on store.rows, as sent (not cleaned)."""
        return [row for v in self.values(STORE_ROWS) if v["table"] == table for row in json.loads(v["rows"])]

    def table_rows(self) -> dict[str, list[dict[str, Any]]]:
        """What the ClickHouse sink would write for everything sent (without ``stored_ms``)."""
        return records.table_rows(records.TopicRecord(p.topic, p.value) for p in self.produced(opened=False))


def _text_key(key: bytes | None) -> str | bytes | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


async def run(handle: Handle, source: TestingSource | Iterable[InputRecord], sink: TestingSink | None = None, *,
              batch_size: int | None = None, consumer_records: bool = False) -> TestingSink:
    """Feed ``source`` to ``handle`` batch by batch (one batch by default), flushing an Emitter per batch
    as the worker does; returns the sink holding what was produced."""
    if not isinstance(source, TestingSource):
        source = TestingSource(source)
    sink = sink if sink is not None else TestingSink(prefix=source.prefix)
    for batch in source.batches(batch_size, consumer_records):
        out = sink.emitter()
        await handle(batch, out)
        await out.flush()
        sink.flushes += 1
    return sink
