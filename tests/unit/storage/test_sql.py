"""streams.storage.sql: literals, parameter substitution, migration statements, value coercion (pure, no engine)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.storage.sql import RowError, column_coercer, split_statements, sql_literal, substitute


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
