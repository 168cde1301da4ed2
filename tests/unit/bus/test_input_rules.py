"""Input rules, one for both encodings: every raw record passes the same checks as JSON and as Avro,
and every rule names the field it refused."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.bus.codec import DecodeError, registry
from streams.bus.rules import DEFAULT_RULES, InputRules
from streams.settings import Settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def call(**over: Any) -> dict[str, Any]:
    record = {"call_id": "C-1", "line": "12345", "received_at": iso(NOW - timedelta(minutes=3)), "caller": "138",
              "text": "路灯坏了", "address": "天平路100号", "lat": None, "lon": None, "channel": None}
    record.update(over)
    return record


def track(**over: Any) -> dict[str, Any]:
    record = {"inspector_id": "I-1", "ts": iso(NOW), "lat": 31.19, "lon": 121.43}
    record.update(over)
    return record


def reading(**over: Any) -> dict[str, Any]:
    record = {"device_id": "D-1", "ts": iso(NOW), "metric": "vibration", "value": 1.5}
    record.update(over)
    return record


def camera(**over: Any) -> dict[str, Any]:
    record = {"alert_id": "A-1", "camera_id": "CAM-1", "ts": iso(NOW), "type": "crowd", "confidence": 0.9,
              "count": None, "snapshot": None}
    record.update(over)
    return record


SCHEMA_OF = {"call": "hotline_call", "track": "field_track", "reading": "iot_reading", "camera": "camera_alert"}
BUILD = {"call": call, "track": track, "reading": reading, "camera": camera}

# (record kind, overrides, words the reason must contain)
VIOLATIONS = [
    ("reading", {"value": float("nan")}, ["value", "finite"]),
    ("reading", {"value": float("inf")}, ["value", "finite"]),
    ("camera", {"confidence": float("nan")}, ["confidence", "finite"]),
    ("camera", {"confidence": 1.5}, ["confidence", "0..1"]),
    ("track", {"lat": 95.0}, ["lat", "range"]),
    ("track", {"lon": 500.0}, ["lon", "range"]),
    ("call", {"line": "99999"}, ["line", "12345"]),
    ("call", {"address": "徐" * 20_000}, ["address", "20000 characters", "limit"]),
    ("call", {"received_at": "1970-01-01T00:00:00+00:00"}, ["received_at", "days before", "30 days"]),
    ("call", {"received_at": iso(NOW + timedelta(hours=2))}, ["received_at", "future"]),
    ("call", {"received_at": "0001-01-01T00:00:00+08:00"}, ["received_at"]),
    ("call", {"received_at": "yesterday"}, ["received_at", "ISO-8601"]),
]


@pytest.mark.parametrize("encoding", ["json", "avro"])
@pytest.mark.parametrize("kind,over,words", VIOLATIONS, ids=[f"{k}-{next(iter(o))}-{i}" for i, (k, o, _) in
                                                             enumerate(VIOLATIONS)])
def test_the_same_rule_refuses_json_and_avro(encoding: str, kind: str, over: dict, words: list[str]) -> None:
    record = BUILD[kind](**over)
    name = SCHEMA_OF[kind]
    codec = registry()
    if encoding == "json":
        if any(isinstance(v, float) and v != v or v in (float("inf"),) for v in over.values()):
            pytest.skip("strict JSON has no NaN/Infinity literal (see test_json_non_finite_literals)")
        data = json.dumps(record, ensure_ascii=False).encode()
    else:
        data = codec.encode(name, record)
    with pytest.raises(DecodeError) as err:
        codec.decode(data, name, DEFAULT_RULES, NOW_MS)
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("kind", list(BUILD))
def test_good_records_pass_in_both_encodings(kind: str) -> None:
    codec = registry()
    record = BUILD[kind]()
    name = SCHEMA_OF[kind]
    assert codec.decode(json.dumps(record, ensure_ascii=False).encode(), name, DEFAULT_RULES, NOW_MS)[1] == record
    assert codec.decode(codec.encode(name, record), name, DEFAULT_RULES, NOW_MS)[1] == record


@pytest.mark.parametrize("literal,word", [
    (b"NaN", "not JSON"), (b"Infinity", "not JSON"), (b"-Infinity", "not JSON"), (b"1e309", "infinity"),
    (b"-1e400", "infinity"),
])
def test_json_non_finite_literals(literal: bytes, word: str) -> None:
    data = b'{"device_id": "D-1", "ts": "2026-11-24T12:00:00+00:00", "metric": "tilt", "value": ' + literal + b"}"
    with pytest.raises(DecodeError, match=word):
        registry().decode(data, "iot_reading")


def test_json_lone_surrogate_deep_nesting_and_bad_utf8() -> None:
    codec = registry()
    with pytest.raises(DecodeError, match="surrogate"):
        codec.decode(json.dumps(call(text="\ud800")).encode(), "hotline_call")
    with pytest.raises(DecodeError, match="surrogate"):  # a dict handed over as is (replay files)
        codec.from_json("hotline_call", call(text="a\udfffb"))
    with pytest.raises(DecodeError, match="depth"):
        codec.decode(b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", "hotline_call")
    with pytest.raises(DecodeError, match="UTF-8"):
        codec.decode(b'{"text": "\xff\xfe"}', "hotline_call")
    with pytest.raises(DecodeError, match="infinity"):
        codec.decode(json.dumps(reading(value=10 ** 400)).encode(), "iot_reading")
    with pytest.raises(DecodeError, match="double range"):
        codec.from_json("iot_reading", reading(value=10 ** 400))


def test_tombstones_and_avro_garbage_are_reasons_not_crashes() -> None:
    codec = registry()
    with pytest.raises(DecodeError, match="tombstone"):
        codec.decode(None, "iot_reading")
    good = codec.encode("iot_reading", reading())
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(good + b"\x00", "iot_reading")
    with pytest.raises(DecodeError, match="corrupt Avro"):
        codec.decode(good[:12], "iot_reading")
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(b"\xc3\x01\x01\x02", "iot_reading")


def test_event_time_window_comes_from_settings_and_is_measured_against_the_kafka_timestamp() -> None:
    codec = registry()
    rules = InputRules.from_settings(Settings(event_time_max_age_days=400, event_time_max_ahead_seconds=0))
    old = call(received_at=iso(NOW - timedelta(days=100)))
    assert codec.decode(json.dumps(old).encode(), "hotline_call", rules, NOW_MS)
    with pytest.raises(DecodeError, match="30 days"):
        codec.decode(json.dumps(old).encode(), "hotline_call", DEFAULT_RULES, NOW_MS)
    # the same record, replayed long after it reached Kafka, gets the same verdict (no wall clock)
    assert codec.decode(json.dumps(old).encode(), "hotline_call", DEFAULT_RULES,
                        NOW_MS - 90 * 86_400_000)
    # without a Kafka timestamp (replay files) there is no window
    assert codec.decode(json.dumps(old).encode(), "hotline_call")
    with pytest.raises(DecodeError, match="future"):
        codec.decode(json.dumps(call(received_at=iso(NOW + timedelta(seconds=5)))).encode(), "hotline_call",
                     rules, NOW_MS)


def test_field_and_array_limits_come_from_settings() -> None:
    codec = registry()
    rules = InputRules.from_settings(Settings(input_max_field_chars=40, input_max_items=2))
    with pytest.raises(DecodeError, match="'text' is 41 characters long; the limit is 40"):
        codec.decode(json.dumps(call(text="x" * 41)).encode(), "hotline_call", rules)
    report = {"report_id": "R", "reporter_id": "I", "reporter_kind": "inspector", "reported_at": iso(NOW),
              "photos": ["a", "b", "c"]}
    with pytest.raises(DecodeError, match=r"'photos' has 3 items; the limit is 2"):
        codec.decode(json.dumps(report).encode(), "field_report", rules)
