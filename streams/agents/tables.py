"""Faust tables as the plain mappings the core takes (the core never sees a Faust object)."""
from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

from faust.streams import _current_event, current_event
from faust.types import EventT

V = TypeVar("V")


def focus(event: EventT | None) -> None:
    """Point Faust's table writes (the changelog partition of this task's current event) at ``event``.

    Only the task's context variable, never ``stream.current_event``: ``take_events()`` reads that
    attribute when it buffers the *next* event while the agent still holds the batch, and an old
    event put there makes it record the old event in place of the new one -- the new record would be
    acknowledged without ever being processed (inputs silently lost; found by the fault suite)."""
    _current_event.set(weakref.ref(event) if event is not None else None)


class TableView(MutableMapping[str, V]):
    """A plain MutableMapping over a Faust table.

    Writes are held until ``flush_writes()`` at the end of a batch, so a case changed by fifty
    signals in one batch costs one changelog record, not fifty. Each held write remembers the
    event that made it, so its changelog record still lands in that event's partition."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[V, Any]] = {}  # key -> (value, the event that wrote it)
        self._journal: dict[str, tuple[V, Any] | None] | None = None  # what the writes since mark() replaced

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._pending:
            return self._pending[key][0]
        value = self._table.get(key)
        return default if value is None else value

    def __setitem__(self, key: str, value: V) -> None:
        if self._journal is not None and key not in self._journal:
            self._journal[key] = self._pending.get(key)
        self._pending[key] = (value, current_event())

    def mark(self) -> None:
        """Start remembering what the next writes replace, so that :meth:`undo` can take them back."""
        self._journal = {}

    def undo(self) -> bool:
        """Take back the writes since :meth:`mark` (an input that failed half-way); True if there were any."""
        journal, self._journal = self._journal or {}, None
        for key, previous in journal.items():
            if previous is None:
                self._pending.pop(key, None)
            else:
                self._pending[key] = previous
        return bool(journal)

    def __delitem__(self, key: str) -> None:
        # Only this key: flushing the other held writes here would send them to the changelog partition
        # of the current event instead of their own.
        held = self._pending.pop(key, None)
        if key in self._table:
            del self._table[key]
        elif held is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(list(dict.fromkeys([*self._table.keys(), *self._pending])))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def flush_writes(self, stream: Any = None) -> None:
        """Write the held values to the table, each with the event that made it current (its partition)."""
        pending, self._pending = self._pending, {}
        self._journal = None
        if not pending:
            return
        last = current_event()
        for key, (value, event) in pending.items():
            if event is not None:
                focus(event)
            self._table[key] = value
        focus(last)
