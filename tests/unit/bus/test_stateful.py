"""The stateful consumer's offset discipline: a partition's state sees each record once, in order."""
from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.bus.codec import registry
from streams.bus.stateful import StatefulBatchConsumer
from streams.metrics import PipelineMetrics
from streams.settings import Settings

TP = TopicPartition("iot.readings", 3)


def records(first: int, last: int) -> list[ConsumerRecord]:
    return [ConsumerRecord(TP.topic, TP.partition, o, 0, 0, b"k", b"v", None, 1, 1, ()) for o in range(first, last + 1)]


def consumer() -> StatefulBatchConsumer:
    c = StatefulBatchConsumer(Settings(), ["iot.readings"], {"iot.readings": "state"}, registry(), PipelineMetrics())
    c.states[TP] = object()  # type: ignore[assignment]
    return c


def test_records_prefetched_before_the_seek_back_are_dropped() -> None:
    """Restored with a checkpoint that says re-read from 90 while the group had committed 124: a batch from
    124 fetched before the seek is dropped; the re-read from 90 goes through."""
    c = consumer()
    c.expected[TP], c.stale_from[TP] = 90, 124
    assert c._in_order(TP, records(124, 200)) == []
    assert [r.offset for r in c._in_order(TP, records(90, 130))] == list(range(90, 131))
    assert TP not in c.stale_from
    assert [r.offset for r in c._in_order(TP, records(125, 140))] == list(range(131, 141))   # seen ones dropped


def test_without_a_checkpoint_the_first_batch_sets_the_pace() -> None:
    c = consumer()
    assert [r.offset for r in c._in_order(TP, records(5, 7))] == [5, 6, 7]
    assert c._in_order(TP, records(6, 7)) == []
    assert [r.offset for r in c._in_order(TP, records(10, 11))] == [10, 11]   # a gap (compaction, markers) is fine
