"""SQL text and values shared by both engines: identifiers, literals, ``%(name)s`` substitution,
migration-file statements, and the per-column coercion of Python values for INSERT.

Everything here is pure (no engine); the schema and the queries stay inside what clickhouse-server
18.16 accepts.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RowError(ValueError):
    """A row does not fit its table (unknown column, wrong type): the writer's bug, never retried."""


def quote_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def sql_literal(value: Any) -> str:
    """A ClickHouse literal for a query parameter (same text on both engines)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float parameter: {value!r}")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime parameter: give it a timezone")
        return f"toDateTime({int(value.timestamp())})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


def substitute(sql: str, params: dict[str, Any] | None) -> str:
    """``%(name)s`` placeholders -> literals (client side, identical for both engines)."""
    if params is None:
        return sql
    return sql % {name: sql_literal(value) for name, value in params.items()}


def split_statements(script: str) -> list[str]:
    """Statements of a migration file: ';' ends a statement; '--' comment lines are dropped."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def _zero_value(ch_type: str) -> Any:
    if ch_type.startswith("Nullable("):
        return None
    if ch_type.startswith("Array("):
        return []
    if ch_type == "String":
        return ""
    if ch_type.startswith("Float"):
        return 0.0
    return 0


Coercer = Callable[[Any], Any]


class _Never:
    """A type no value has: the column has no value that passes as it is."""


def passes_as_is(ch_type: str) -> type:
    """The Python type whose values a column of ``ch_type`` takes unchanged (``type(value) is`` it): its
    coercer would return them as they are, so the writer skips the call (a call per value and column
    was most of the writer's own time). Unsigned integers and floats always go through their coercer
    (the sign, the finiteness are checked there)."""
    if ch_type == "String":
        return str
    if ch_type.startswith("Int"):
        return int
    return _Never


def column_coercer(where: str, ch_type: str) -> Coercer:
    """A function turning a Python value into what both drivers accept for ``ch_type``.

    Built once per column (the per-row cost dominates the writer); None means unknown, which
    the contract writes as '' / 0 / [] (NULL only for Nullable).
    """
    zero = _zero_value(ch_type)
    if ch_type.startswith("Nullable("):
        inner = column_coercer(where, ch_type[9:-1])
        return lambda value: None if value is None else inner(value)
    if ch_type.startswith("Array("):
        item = column_coercer(where, ch_type[6:-1])

        plain = passes_as_is(ch_type[6:-1])

        def array(value: Any) -> Any:
            if type(value) is list and plain is not _Never and all(type(v) is plain for v in value):
                return value   # the usual Array(String): nothing to convert, no copy
            if value is None:
                return []
            if not isinstance(value, (list, tuple)):
                raise RowError(f"{where}: expected a list, got {type(value).__name__}")
            return [item(v) for v in value]
        return array
    if ch_type == "String":
        def string(value: Any) -> Any:
            if type(value) is str:
                return value
            if value is None:
                return ""
            if isinstance(value, str):
                return str(value)
            raise RowError(f"{where}: expected str, got {type(value).__name__} {value!r:.60}")
        return string
    if ch_type.startswith(("Int", "UInt")):
        unsigned = ch_type.startswith("UInt")

        def integer(value: Any) -> Any:
            if value is None:
                return 0
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise RowError(f"{where}: expected int, got {type(value).__name__} {value!r:.60}")
            if unsigned and value < 0:
                raise RowError(f"{where}: negative value {value}")
            return int(value)
        return integer
    if ch_type.startswith("Float"):
        def number(value: Any) -> Any:
            if value is None:
                return zero
            if not isinstance(value, (int, float)):
                raise RowError(f"{where}: expected a number, got {type(value).__name__} {value!r:.60}")
            result = float(value)
            if not math.isfinite(result):
                raise RowError(f"{where}: non-finite {result}")
            return result
        return number

    def unwritable(value: Any) -> Any:
        raise RowError(f"{where}: column type not writable by this store")
    return unwritable

