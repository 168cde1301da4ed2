"""Faust tables as the plain mappings the core takes (the core never sees a Faust object)."""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from faust.streams import _current_event, current_event
from faust.types import EventT

V = TypeVar("V")
log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 15.0
# How long to wait for the broker's acknowledgements before saying so in the log (and waiting on).
ACK_WAIT_LOG_SECONDS = 30.0


class StateNotWritten(Exception):
    """The worker is stopping while changelog records of a batch are unacknowledged: the batch must not
    be acknowledged (it replays on the next start)."""


@dataclass
class _Sent:
    """One changelog record handed to Faust's producer, and what it takes to send it again."""

    key: str
    value: Any            # None: a deletion
    event: Any            # the event that made the write (its partition)
    future: asyncio.Future[Any]


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
    event that made it, so its changelog record still lands in that event's partition. The agent
    then awaits :meth:`written` (the broker's acknowledgement of those records) before Faust may
    acknowledge the batch."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[V, Any]] = {}  # key -> (value, the event that wrote it)
        self._journal: dict[str, tuple[V, Any] | None] | None = None  # what the writes since mark() replaced
        self._unacked: list[_Sent] = []  # changelog records sent since the last written()

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
            self._write(key, None, current_event())
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
            self._write(key, value, event)
        focus(last)

    def _write(self, key: str, value: V | None, event: Any) -> None:
        """What Faust's ``Table.__setitem__`` / ``__delitem__`` do (the changelog record, then the local
        store), keeping the record's future so that :meth:`written` can wait for the broker's ack."""
        send = getattr(self._table, "send_changelog", None)
        if send is None:   # a plain mapping (tests, replay): nothing to acknowledge
            if value is None:
                del self._table[key]
            else:
                self._table[key] = value
            return
        partition = self._table.partition_for_key(key)
        if value is None:
            future = send(partition, key, None, value_serializer="raw")
            if key in self._table.data:
                del self._table.data[key]
        else:
            future = send(partition, key, value)
            self._table.data[key] = value
        self._unacked.append(_Sent(key, value, event, future))

    async def written(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Wait until the broker has acknowledged every changelog record written since the last call;
        a record the producer failed is sent again (the latest value of its key: idempotent by content).
        Returns how many records were acknowledged.

        Why: Faust commits a batch's input offsets after ``producer.flush()``, but that flush gives up on
        its buffer after 0.1 s without a send (``ProducerBuffer.flush_atmost``), and aiokafka's flush
        never sees what is left there: under load the offsets of inputs whose state is not yet
        acknowledged can be committed, and a crash then restarts past inputs whose state is gone (cases
        and their timers). The agents await this before Faust may acknowledge the batch."""
        acked = 0
        delay = BACKOFF_INITIAL
        while self._unacked:
            batch, self._unacked = self._unacked, []
            pending = {sent.future for sent in batch}
            while pending:
                _, pending = await asyncio.wait(pending, timeout=ACK_WAIT_LOG_SECONDS)
                if pending:
                    if stopping():
                        self._unacked = batch
                        raise StateNotWritten(f"{len(pending)} changelog record(s) not acknowledged")
                    log.warning("%d changelog record(s) still unacknowledged after %.0fs; waiting on",
                                len(pending), ACK_WAIT_LOG_SECONDS)
            failed = [sent for sent in batch if sent.future.cancelled() or sent.future.exception() is not None]
            acked += len(batch) - len(failed)
            if not failed:
                continue
            if stopping():
                self._unacked = failed
                raise StateNotWritten(f"{len(failed)} changelog record(s) failed")
            error = failed[0].future.exception() if not failed[0].future.cancelled() else "cancelled"
            log.warning("%d changelog record(s) failed (%s); sending them again in %.1fs", len(failed), error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            last = current_event()
            for sent in failed:
                if sent.event is not None:
                    focus(sent.event)
                self._write(sent.key, sent.value, sent.event)
            focus(last)
        return acked
