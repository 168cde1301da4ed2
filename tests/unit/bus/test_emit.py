"""The emitter's guard: nothing it sends can exceed the message size, one input's outputs are all or
none, and a dead letter always fits, whatever the input was."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from streams.bus.codec import registry
from streams.bus.emit import Emitter, RecordTooLarge
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import INTERNAL_SCHEMAS, RAW_SCHEMAS, TopicNames

LIMIT = 20_000


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        self.records.append((topic, key, value))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


SEALER = DeadLetterSealer.ephemeral()


def emitter(sent: Sent) -> Emitter:
    return Emitter(sent, registry(), TopicNames("p"), {**RAW_SCHEMAS, **INTERNAL_SCHEMAS}, sealer=SEALER,
                   max_message_bytes=LIMIT)


def opened(value: bytes) -> dict:
    dead = registry().decode(value)[1]
    return {**dead, "original": SEALER.open(dead["original"]),
            "key": SEALER.open(dead["key"]) if dead.get("key") is not None else None}


def triage(text: str) -> dict:
    return {"triage_id": "t", "topic": "hotline.calls", "reason": "r", "ts_ms": 1, "record": text,
            "best_category": None, "confidence": None}


async def test_a_record_above_the_limit_raises_and_rollback_drops_that_inputs_outputs() -> None:
    sent = Sent()
    out = emitter(sent)
    out.record("triage.manual", triage("ok"))
    checkpoint = out.checkpoint()
    out.record("triage.manual", triage("second output of the same input"))
    out.rows("zero_reports", [{"report_id": "z"}])
    with pytest.raises(RecordTooLarge, match=r"triage.manual record is \d+ bytes; the message limit is 20000"):
        out.record("triage.manual", triage("x" * LIMIT))
    out.rollback(checkpoint)
    out.dead_letter("hotline.calls", 0, 7, "too large", 1, b"{}", None)
    assert await out.flush() == 2
    assert [t for t, _, _ in sent.records] == ["p.triage.manual", "p.hotline.calls.dlq"]


async def test_rows_are_packed_into_messages_below_the_limit() -> None:
    sent = Sent()
    out = emitter(sent)
    rows = [{"inspector_id": f"I-{i}", "street": "徐家汇街道" * 20} for i in range(2000)]
    out.rows("inspector_tracks", rows)
    await out.flush()
    assert len(sent.records) > 1
    assert all(len(value) <= LIMIT for _, _, value in sent.records)
    unpacked = [row for _, _, value in sent.records for row in json.loads(registry().decode(value)[1]["rows"])]
    assert unpacked == rows


def test_a_row_that_cannot_be_sent_fails_when_staged() -> None:
    out = emitter(Sent())
    with pytest.raises(RecordTooLarge):
        out.rows("zero_reports", [{"report_id": "x" * LIMIT}])
    with pytest.raises(ValueError):
        out.rows("sensor_alarms", [{"value": float("nan")}])
    with pytest.raises(ValueError, match="cannot be sent"):
        out.rows("zero_reports", [{"report_id": "\ud800"}])
    assert len(out) == 0


@pytest.mark.parametrize("original,key,reason", [
    (None, None, "null value (a tombstone)"),
    (b"x" * (LIMIT - 10), b"k" * 5000, "huge original"),
    (b"\xff\xfe", b"\x00", "lone \ud800 surrogate in the reason " + "r" * 10_000),
])
async def test_a_dead_letter_always_fits_and_never_raises(original: bytes | None, key: bytes | None,
                                                          reason: str) -> None:
    sent = Sent()
    out = emitter(sent)
    out.dead_letter("iot.readings", 3, 99, reason, 5, original, key)
    await out.flush()
    (topic, _, value), = sent.records
    assert topic == "p.iot.readings.dlq" and len(value) <= LIMIT
    dead = opened(value)
    assert (dead["partition"], dead["offset"]) == (3, 99)
    assert dead["original"] == (original or b"")[:len(dead["original"])]
    if original is None:
        assert "null" in dead["reason"]
    elif len(original) > len(dead["original"]):
        assert "original cut" in dead["reason"]


async def test_every_input_gets_one_ledger_row_with_its_outcome() -> None:
    from streams.bus.emit import InputRecord

    sent = Sent()
    out = emitter(sent)
    signal = {"kind": "signal", "signal": "{}", "action": None, "tick_ms": None}
    out.begin(InputRecord("hotline.calls", 0, 10, 1000, b"{}", None))
    out.record("case.inputs", signal, key="s")
    out.begin(InputRecord("hotline.calls", 0, 11, 1001, b"{}", None))
    out.record("triage.manual", triage("low confidence"))
    out.begin(InputRecord("hotline.calls", 0, 12, 1002, None, None))
    out.record("case.inputs", signal, key="s")
    out.park("null value (a tombstone)")           # its staged output is dropped, it is dead-lettered
    out.begin(InputRecord("iot.readings", 1, 5, 1003, b"{}", None))   # a normal reading: nothing
    out.begin(InputRecord("field.tracks", 1, 6, 1004, b"{}", None))
    out.rows("inspector_tracks", [{"inspector_id": "I"}])
    await out.flush()
    assert out.accounted == 5
    topics = [t for t, _, _ in sent.records]
    assert topics.count("p.case.inputs") == 1 and topics.count("p.hotline.calls.dlq") == 1
    ledger = [row for t, _, v in sent.records if t == "p.store.rows"
              for row in json.loads(registry().decode(v)[1]["rows"]) if "outcome" in row]
    assert [(r["topic"], r["offset"], r["outcome"], r["ts_ms"]) for r in ledger] == [
        ("hotline.calls", 10, "case.inputs", 1000), ("hotline.calls", 11, "triage.manual", 1001),
        ("hotline.calls", 12, "dlq", 1002), ("iot.readings", 5, "none", 1003), ("field.tracks", 6, "rows", 1004)]
    dead = [opened(v) for t, _, v in sent.records if t.endswith(".dlq")][0]
    assert (dead["offset"], dead["ts_ms"], dead["original"]) == (12, 1002, b"")


class Flaky(Sent):
    """Acks nothing while ``down``; with ``refuse`` set, the broker refuses records larger than that for good."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refuse: int | None = None

    async def __call__(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

        done: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.down:
            done.set_exception(KafkaConnectionError("broker away"))
        elif self.refuse is not None and len(value) > self.refuse:
            done.set_exception(MessageSizeTooLargeError("too large for this broker"))
        else:
            self.records.append((topic, key, value))
            done.set_result(None)
        return done


async def test_unacknowledged_records_stay_staged_and_go_on_the_next_flush() -> None:
    from streams.bus.emit import SendFailed

    sent = Flaky()
    out = emitter(sent)
    out.record("triage.manual", triage("a"))
    out.record("triage.manual", triage("b"))
    sent.down = True
    with pytest.raises(SendFailed, match="2 records not acknowledged: KafkaConnectionError"):
        await out.flush()
    with pytest.raises(SendFailed):
        await out.flush()
    sent.down = False
    assert await out.flush() == 2
    assert await out.flush() == 0
    assert [registry().decode(v)[1]["record"] for _, _, v in sent.records] == ["a", "b"]


async def test_a_record_the_broker_refuses_for_good_dead_letters_its_input() -> None:
    from streams.bus.emit import InputRecord, SendFailed

    sent = Flaky()
    sent.refuse = 5000
    out = emitter(sent)
    out.begin(InputRecord("hotline.calls", 2, 40, 7, b"{}", None))
    out.record("triage.manual", triage("small"))
    out.begin(InputRecord("hotline.calls", 2, 41, 8, b"{}", None))
    out.record("triage.manual", triage("x" * 6000))
    with pytest.raises(SendFailed):
        await out.flush()
    await out.flush()
    dead = [opened(v) for t, _, v in sent.records if t.endswith(".dlq")]
    assert [(d["offset"], "refused" in d["reason"]) for d in dead] == [(41, True)]
