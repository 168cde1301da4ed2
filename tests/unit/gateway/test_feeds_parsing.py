"""Feed bodies: one object, an array or JSON lines; size limits; reasons field by field with the worker's verdict."""

from __future__ import annotations

import json

import pytest

from streams.bus.codec import DecodeError, registry
from streams.gateway.feeds import (
    FEED_TOPICS,
    PayloadError,
    TooLarge,
    check_sizes,
    field_errors,
    message_key,
    split_body,
    validate_all,
)


def call(**kw) -> dict:
    return {
        "call_id": "C1",
        "line": "12345",
        "received_at": "2026-11-20T09:30:00+08:00",
        "caller": "1",
        "text": "噪音",
        **kw,
    }


def test_three_body_shapes() -> None:
    assert [o for o, _, _ in split_body(json.dumps(call()).encode(), "application/json")] == [call()]
    assert len(split_body(json.dumps([call(), call()]).encode(), "application/json")) == 2
    lines = (json.dumps(call()) + "\n\n" + "{broken\n" + json.dumps(call(call_id="C2"))).encode()
    items = split_body(lines, "application/json")  # several documents: read as JSON lines
    assert [e is None for _, e, _ in items] == [True, False, True]
    assert split_body(json.dumps(call()).encode(), "application/x-ndjson")[0][0] == call()
    with pytest.raises(PayloadError, match="empty"):
        split_body(b"  \n", "application/json")
    with pytest.raises(PayloadError, match="not JSON"):
        split_body(b"{broken", "application/json")


def test_sizes() -> None:
    items = split_body((json.dumps(call()) + "\n" + json.dumps(call(text="x" * 500))).encode(), "application/x-ndjson")
    check_sizes(items, 2000, 4096, 1000)
    with pytest.raises(TooLarge, match="record 1"):
        check_sizes(items, 2000, 400, 1000)
    with pytest.raises(TooLarge, match="field 'text'"):
        check_sizes(items, 2000, 4096, 100)
    with pytest.raises(TooLarge, match="item of field 'photos'"):
        check_sizes([({"photos": ["p" * 200]}, None, -1)], 10, 4096, 100)


def test_the_worker_decides_and_the_reasons_name_every_field() -> None:
    codec = registry()
    outcomes = validate_all(
        codec,
        "hotline_call",
        [(call(), None, 0), (call(line=5, lat="x", extra=1), None, 0), ([1, 2], None, 0), (None, "not JSON: x", 0)],
    )
    assert outcomes[0].ok and outcomes[0].record["call_id"] == "C1"
    assert {e["field"] for e in outcomes[1].errors} == {"line", "lat", "extra"}
    assert outcomes[2].errors[0]["field"] is None and not outcomes[3].ok
    # semantic rules after the types: the field is named from the codec's reason
    alert = {"alert_id": "a", "camera_id": "c", "type": "crowd", "ts": "2026-11-20T09:30:00+08:00", "confidence": 1.5}
    with pytest.raises(DecodeError) as info:
        codec.from_json("camera_alert", alert)
    assert field_errors(codec, "camera_alert", alert, info.value) == [
        {"field": "confidence", "reason": str(info.value)}
    ]


def test_doors_and_keys() -> None:
    assert "case.actions" not in FEED_TOPICS and "open311.requests" not in FEED_TOPICS
    assert "hotline.calls" in FEED_TOPICS and "iot.readings" in FEED_TOPICS
    assert message_key("hotline_call", call()) == b"C1"
    assert message_key("case_action", {"case_id": None, "source_id": "S1"}) == b"S1"
