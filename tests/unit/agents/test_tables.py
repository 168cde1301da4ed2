"""TableView: the mapping the case engine sees over a Faust table, writes held until the batch ends."""
from __future__ import annotations

from typing import Any

import pytest

from streams.agents.tables import TableView


class Stream:
    """The one member of a Faust stream TableView uses (outside a stream no event is current)."""

    def __init__(self) -> None:
        self.current: Any = "untouched"

    def _set_current_event(self, event: Any) -> None:
        self.current = event


def test_writes_are_held_until_flushed_and_reads_see_them() -> None:
    table: dict[str, Any] = {"a": 1}
    view = TableView(table)
    view["b"] = 2
    view["a"] = 10
    assert table == {"a": 1}  # nothing written yet
    assert view["b"] == 2 and view.get("a") == 10 and "b" in view and "zz" not in view
    assert sorted(view) == ["a", "b"] and len(view) == 2
    view.flush_writes(Stream())
    assert table == {"a": 10, "b": 2}


def test_missing_and_none_values_read_as_absent() -> None:
    view = TableView({"gone": None})
    assert view.get("gone", "default") == "default" and "gone" not in view
    try:
        view["nope"]
    except KeyError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a missing key must raise KeyError")


def test_delete_removes_only_that_key_and_keeps_the_other_held_writes() -> None:
    """Flushing the other held writes at a delete would send them to the changelog partition of the
    current event instead of their own: they stay held until flush_writes."""
    table: dict[str, Any] = {"a": 1}
    view = TableView(table)
    view["b"] = 2
    view["c"] = 3
    del view["a"]
    del view["c"]          # held only: dropped before it reached the table
    assert table == {} and view.get("b") == 2
    view.flush_writes(None)
    assert table == {"b": 2}
    with pytest.raises(KeyError):
        del view["nothing"]


def test_a_flush_outside_a_stream_writes_without_touching_events() -> None:
    table: dict[str, Any] = {}
    view = TableView(table)
    view["k"] = "v"
    view.flush_writes(None)
    assert table == {"k": "v"}
    view.flush_writes(Stream())  # nothing pending: no event juggling
