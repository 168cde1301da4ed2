"""streams.testing, the in-memory bus the adapter tests run on: what goes in is what a Kafka reader
would hand over, what comes out is what an Emitter sent, decoded."""
from __future__ import annotations

import json

import pytest

from streams.bus.emit import Emitter
from streams.bus.topics import CASE_INPUTS, HOTLINE_CALLS, IOT_COMMANDS, STORE_ROWS, dlq
from streams.testing import TestingSink, TestingSource, run, schema_of

CALL = {"call_id": "C1", "line": "12345", "received_at": "2026-11-20T09:30:00+08:00", "caller": "1", "text": "t"}


def test_the_source_numbers_offsets_per_partition_and_encodes_values() -> None:
    source = TestingSource([(HOTLINE_CALLS, "k", CALL), (HOTLINE_CALLS, None, b"raw", 1),
                            (HOTLINE_CALLS, b"\xff", CALL), (CASE_INPUTS, None, {"kind": "tick", "tick_ms": 1})],
                           prefix="p", timestamp_ms=7)
    got = [(r.topic, r.partition, r.offset, r.key, r.timestamp_ms) for r in source.inbound]
    assert got == [("p.hotline.calls", 0, 0, b"k", 7), ("p.hotline.calls", 1, 0, None, 7),
                   ("p.hotline.calls", 0, 1, b"\xff", 7), ("p.case.inputs", 0, 0, None, 7)]
    assert source.inbound[1].value == b"raw" and source.inbound[0].value[:2] == b"\xc3\x01"  # Avro single-object
    assert json.loads(TestingSource([(HOTLINE_CALLS, None, CALL)], encoding="json").inbound[0].value) == CALL
    [record] = TestingSource([(HOTLINE_CALLS, "k", b"v")]).consumer_records()
    assert (record.topic, record.key, record.value, record.timestamp) == (HOTLINE_CALLS, b"k", b"v", 0)
    assert [len(b) for b in TestingSource([(HOTLINE_CALLS, None, b"x")] * 5).batches(2)] == [2, 2, 1]


def test_schema_of_dead_letter_topics() -> None:
    assert schema_of(dlq(HOTLINE_CALLS)) == "dead_letter" and schema_of(HOTLINE_CALLS) == "hotline_call"
    with pytest.raises(KeyError):
        schema_of("nowhere")


async def test_the_sink_decodes_what_an_emitter_sent_per_topic() -> None:
    async def handle(batch: list, out: Emitter) -> None:
        for inbound in batch:
            out.record(IOT_COMMANDS, {"command_id": "c", "device_id": "d", "ts_ms": inbound.offset, "command": "x",
                                      "reading_ts": None}, key="d")
            out.dead_letter(HOTLINE_CALLS, inbound.partition, inbound.offset, "why", 1, inbound.value, inbound.key)
        out.rows("zero_reports", [{"report_id": str(len(batch))}])

    sink = await run(handle, [(HOTLINE_CALLS, "k", b"a"), (HOTLINE_CALLS, None, b"b"), (HOTLINE_CALLS, None, b"c")],
                     batch_size=2)
    assert sink.flushes == 2
    assert sink.counts() == {IOT_COMMANDS: 3, dlq(HOTLINE_CALLS): 3, STORE_ROWS: 2}
    assert [v["ts_ms"] for v in sink.values(IOT_COMMANDS)] == [0, 1, 2] and sink.keys(IOT_COMMANDS) == ["d"] * 3
    assert [p.value["original"] for p in sink.produced(dlq(HOTLINE_CALLS))] == [b"a", b"b", b"c"]
    assert sink.store_rows("zero_reports") == [{"report_id": "2"}, {"report_id": "1"}]
    assert sink.table_rows()["zero_reports"] == [{"report_id": "2"}, {"report_id": "1"}]
    assert len(sink.table_rows()["dead_letters"]) == 3


async def test_a_sink_can_collect_several_runs() -> None:
    sink = TestingSink(prefix="p")

    async def handle(batch: list, out: Emitter) -> None:
        out.emit([])
        out.raw("p.other", b"x")

    await run(handle, TestingSource([(HOTLINE_CALLS, None, b"x")], prefix="p"), sink)
    await run(handle, TestingSource([(HOTLINE_CALLS, None, b"x")], prefix="p"), sink)
    assert [s[0] for s in sink.sent] == ["p.other", "p.other"]
