"""Property-based: whatever bytes arrive on a raw topic, the codec returns a record that obeys the
input rules or raises DecodeError with a reason -- never another exception, never a record that
would break a later step (non-finite number, unencodable string)."""
from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.bus.codec import DecodeError, registry
from streams.bus.rules import DEFAULT_RULES
from streams.bus.topics import RAW_SCHEMAS

NOW_MS = 1_795_000_000_000
RAW = sorted(set(RAW_SCHEMAS.values()))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def assert_clean(value: Any) -> None:
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, str):
        value.encode("utf-8")
        assert len(value) <= DEFAULT_RULES.max_field_chars
    elif isinstance(value, list):
        for item in value:
            assert_clean(item)
    elif isinstance(value, dict):
        for item in value.values():
            assert_clean(item)


def decode_or_reason(data: bytes | None, name: str) -> None:
    try:
        got, record = registry().decode(data, name, DEFAULT_RULES, NOW_MS)
    except DecodeError as exc:
        assert str(exc)
        str(exc).encode("utf-8", "backslashreplace")
        return
    assert got == name
    assert_clean(record)


@FUZZ
@given(name=st.sampled_from(RAW), data=st.binary(max_size=300))
def test_any_bytes(name: str, data: bytes) -> None:
    decode_or_reason(data, name)


@FUZZ
@given(name=st.sampled_from(RAW), data=st.binary(max_size=200))
def test_any_bytes_behind_the_avro_marker(name: str, data: bytes) -> None:
    fp = registry()[name].fingerprint
    decode_or_reason(b"\xc3\x01" + fp + data, name)


@FUZZ
@given(name=st.sampled_from(RAW), obj=st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_any_json_object(name: str, obj: dict) -> None:
    decode_or_reason(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"), name)


@FUZZ
@given(name=st.sampled_from(RAW), data=st.data())
def test_records_shaped_like_the_schema_round_trip_or_are_refused(name: str, data: st.DataObject) -> None:
    """Field values of the right types but any content (NaN, huge, surrogates, far-off times)."""
    schema = registry()[name]
    record: dict[str, Any] = {}
    for field in schema.parsed["fields"]:
        record[field["name"]] = data.draw(_value_of(field["type"]), label=field["name"])
    try:
        encoded = registry().encode(name, record)
    except (ValueError, TypeError, UnicodeEncodeError):
        encoded = None  # Avro cannot even carry it (lone surrogate): only JSON can
    if encoded is not None:
        decode_or_reason(encoded, name)
    decode_or_reason(json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass"), name)


def _value_of(avro_type: Any) -> st.SearchStrategy:
    if isinstance(avro_type, list):
        return st.one_of(*[_value_of(t) for t in avro_type])
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        return st.lists(_value_of(avro_type["items"]), max_size=3)
    timestamps = st.sampled_from(["2026-11-24T10:00:00+08:00", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+08:00",
                                  "9999-12-31T23:59:59-12:00", "not a time", "2026-11-24T10:00:00"])
    return {
        "null": st.none(), "boolean": st.booleans(), "int": st.integers(-2**31, 2**31 - 1),
        "long": st.integers(-2**63, 2**63 - 1), "double": st.floats(), "float": st.floats(width=32),
        "string": st.text(max_size=20) | timestamps | st.sampled_from(["12345", "inspector", "department"]),
        "bytes": st.binary(max_size=10),
    }[avro_type if isinstance(avro_type, str) else "null"]
