"""The codec's plain-Python type checks (a speed-up) never accept what fastavro's validation rejects: for
every shipped schema, a field value passing the check passes fastavro too, so from_json's verdict is fastavro's."""

from __future__ import annotations

from typing import Any

from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.bus.codec import _type_check, registry

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=6,
)

FIELD_TYPES = [field["type"] for schema in registry().by_name.values() for field in schema.parsed["fields"]]
EXTRA_TYPES = [
    "int",
    "long",
    "float",
    "double",
    "boolean",
    "string",
    "null",
    ["null", "int"],
    {"type": "map", "values": {"type": "array", "items": "string"}},
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FIELD_TYPES + EXTRA_TYPES), values)
def test_a_value_the_check_accepts_is_valid_for_fastavro(avro_type: Any, value: Any) -> None:
    check = _type_check(avro_type)
    if check is not None and check(value):
        assert validate(value, avro_type, raise_errors=False), (avro_type, value)


def test_the_checks_exist_for_the_raw_feeds_and_reject_the_obvious() -> None:
    codec = registry()
    for name in ("hotline_call", "field_report", "iot_reading", "camera_alert", "open311_request", "case_action"):
        assert codec[name].type_checks is not None, name
    check = _type_check(["null", "double"])
    assert check(None) and check(1) and check(1.5) and not check(True) and not check("1")
    assert not _type_check("int")(2**31) and _type_check("long")(2**31)
