"""Dead-letter originals are sealed with Fernet; rotation with MultiFernet; the Emitter seals and masks."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.bus.codec import registry
from streams.bus.emit import Emitter
from streams.bus.sealing import DeadLetterSealer, SealingError, generate_key, looks_sealed
from streams.bus.topics import TopicNames

ORIGINAL = '{"call_id":"C1","caller":"13912345678","text":"回电13912345678"}'.encode()


def test_seal_and_open_round_trip_and_hide_the_bytes() -> None:
    sealer = DeadLetterSealer([generate_key()])
    token = sealer.seal(ORIGINAL)
    assert looks_sealed(token) and b"13912345678" not in token and token != sealer.seal(ORIGINAL)
    assert sealer.open(token) == ORIGINAL


def test_rotation_new_key_first_old_records_still_open() -> None:
    old, new = generate_key(), generate_key()
    token = DeadLetterSealer([old]).seal(ORIGINAL)
    rotated = DeadLetterSealer.from_setting(f"{new}, {old}")
    assert rotated.open(token) == ORIGINAL
    resealed = rotated.reseal(token)
    assert DeadLetterSealer([new]).open(resealed) == ORIGINAL
    with pytest.raises(SealingError, match="no configured dead-letter key"):
        DeadLetterSealer([new]).open(token)


def test_bad_keys_are_refused_with_the_reason() -> None:
    with pytest.raises(SealingError, match="not a Fernet key"):
        DeadLetterSealer(["not-a-key"])
    with pytest.raises(SealingError, match="CITYGRID_DLQ_KEY"):
        DeadLetterSealer([])


def test_the_emitter_seals_originals_and_keys_and_masks_the_reason() -> None:
    sent: list[tuple[str, Any, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    sealer = DeadLetterSealer.ephemeral()
    out = Emitter(send, registry(), TopicNames("t"), {}, sealer=sealer)
    out.dead_letter("hotline.calls", 2, 41, "field 'text': 回电13912345678 is odd", 1, ORIGINAL, b"13912345678")
    asyncio.run(out.flush())
    [(topic, key, value)] = sent
    assert topic == "t.hotline.calls.dlq" and key is None and b"13912345678" not in value
    _, record = registry().decode(value)
    assert sealer.open(record["original"]) == ORIGINAL and sealer.open(record["key"]) == b"13912345678"
    assert "139****5678" in record["reason"]


def test_the_emitter_will_not_dead_letter_without_a_sealer() -> None:
    async def send(*_: Any) -> Any:  # pragma: no cover - never reached
        raise AssertionError

    with pytest.raises(RuntimeError, match="CITYGRID_DLQ_KEY"):
        Emitter(send, registry(), TopicNames(""), {}).dead_letter("hotline.calls", 0, 0, "r", 0, b"x", None)
