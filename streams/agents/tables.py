"""Faust tables as the plain mappings the core takes (the core never sees a Faust object)."""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

from faust.streams import current_event

V = TypeVar("V")


class TableView(MutableMapping[str, V]):
    """A plain MutableMapping over a Faust table.

    Writes are held until ``flush_writes()`` at the end of a batch, so a case changed by fifty
    signals in one batch costs one changelog record, not fifty. Each held write remembers the
    event that made it, so its changelog record still lands in that event's partition."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[V, Any]] = {}  # key -> (value, the event that wrote it)

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
        self._pending[key] = (value, current_event())

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

    def flush_writes(self, stream: Any) -> None:
        """Write the held values to the table, each with its own event current (``stream`` given)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        last = current_event()
        for key, (value, event) in pending.items():
            if stream is not None and event is not None:
                stream._set_current_event(event)
            self._table[key] = value
        if stream is not None:
            stream._set_current_event(last)
