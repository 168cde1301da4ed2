"""streams.storage.sql: literals, parameter substitution, migration statements, value coercion (pure, no engine)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.storage.sql import RowError, column_coercer, passes_as_is, split_statements, sql_literal, substitute


def test_sql_literal_escapes_quotes_and_backslashes() -> None:
    assert sql_literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert sql_literal(None) == "NULL" and sql_literal(True) == "1" and sql_literal(3) == "3"
    assert sql_literal(["a", 1]) == "['a', 1]"
    assert sql_literal(datetime(2026, 1, 1, tzinfo=UTC)) == "toDateTime(1767225600)"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), datetime(2026, 1, 1), object()])
def test_sql_literal_rejects_what_it_cannot_quote(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        sql_literal(bad)


def test_substitute_only_with_params() -> None:
    assert substitute("SELECT '%'", None) == "SELECT '%'"
    assert substitute("SELECT %(x)s", {"x": "a'b"}) == "SELECT 'a\\'b'"


def test_split_statements_drops_comments() -> None:
    script = ("-- header; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n"
              "-- c\nCREATE TABLE b (y UInt8) ENGINE = Memory;\n")
    assert split_statements(script) == ["CREATE TABLE a (x UInt8) ENGINE = Memory",
                                        "CREATE TABLE b (y UInt8) ENGINE = Memory"]


@pytest.mark.parametrize("ch_type, given, expected", [
    ("String", "a", "a"), ("String", None, ""),
    ("Int64", None, 0), ("Int64", 3.0, 3), ("UInt8", True, 1),
    ("Float64", None, 0.0), ("Float64", 2, 2.0),
    ("Nullable(Float64)", None, None), ("Nullable(Float64)", 2, 2.0),
    ("Array(String)", None, []), ("Array(String)", ("a", None), ["a", ""]),
])
def test_column_coercer_turns_values_into_what_both_drivers_accept(ch_type: str, given: Any, expected: Any) -> None:
    value = column_coercer("t.c", ch_type)(given)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("ch_type, given, message", [
    ("String", 5, "expected str"), ("Int64", "soon", "expected int"), ("Int64", 1.5, "expected int"),
    ("UInt8", -1, "negative"), ("Float64", "x", "expected a number"), ("Float64", float("inf"), "non-finite"),
    ("Array(String)", "a", "expected a list"), ("Array(Int64)", [1, "x"], "expected int"),
    ("DateTime", 5, "not writable"),
])
def test_column_coercer_names_the_column_in_a_row_error(ch_type: str, given: Any, message: str) -> None:
    with pytest.raises(RowError, match=message) as caught:
        column_coercer("signals.x (T)", ch_type)(given)
    assert str(caught.value).startswith("signals.x (T): ")


@pytest.mark.parametrize("ch_type, given", [
    ("String", "a"), ("String", None), ("String", 3), ("Int64", 5), ("Int64", None), ("Int64", True), ("Int64", 3.0),
    ("Int32", "7"), ("UInt32", -1), ("UInt32", 4), ("Float64", 2), ("Float64", float("nan")), ("Float64", 1.5),
    ("Nullable(Float64)", None), ("Array(String)", ["a", "b"]), ("Array(String)", ["a", None]),
    ("Array(String)", ("a",)), ("Array(String)", "ab"),
])
def test_a_value_passing_as_it_is_is_what_its_coercer_returns(ch_type: str, given: Any) -> None:
    """The writer skips the coercer for values of ``passes_as_is``'s type: only where the coercer would
    have returned them unchanged (bools, floats, unsigned and out-of-range values still meet it)."""
    coerce = column_coercer("t.c", ch_type)
    try:
        expected: Any = coerce(given)
    except RowError:
        expected = RowError
    if type(given) is passes_as_is(ch_type):
        assert expected is not RowError and expected == given and type(expected) is type(given)
    arrays = column_coercer("t.c", "Array(String)")
    same = ["x", "y"]
    assert arrays(same) is same   # a list of strings is taken as it is, not copied
