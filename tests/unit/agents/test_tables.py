"""TableView: the mapping the case engine sees over a Faust table, writes held until the batch ends."""
from __future__ import annotations

import asyncio
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


class ChangelogTable:
    """The members of a Faust table (``faust.tables.base.Collection``) that TableView writes through:
    ``send_changelog`` returns the record's future, resolved when the broker acknowledges it (here: by
    the test), ``partition_for_key`` the current event's partition, ``data`` the local store."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sent: list[tuple[int | None, str, Any, asyncio.Future[Any]]] = []
        self.partition = 0

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def keys(self) -> Any:
        return self.data.keys()

    def partition_for_key(self, key: str) -> int:
        return self.partition

    def send_changelog(self, partition: int | None, key: str, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, key, value, future))
        return future


async def test_written_waits_for_the_brokers_ack_of_every_changelog_record() -> None:
    """Faust commits offsets after a producer flush that gives up on its buffer after 0.1 s: a batch
    may only be acknowledged once its state records are acknowledged, or a crash restarts past inputs
    whose state is lost (the kill test's duplicate cases). ``written()`` is that wait."""
    table = ChangelogTable()
    view: TableView[Any] = TableView(table)
    view["case-1"] = {"v": 1}
    view["case-2"] = {"v": 2}
    view.flush_writes()
    assert table.data == {"case-1": {"v": 1}, "case-2": {"v": 2}}   # the local store, as Faust's __setitem__
    assert [(p, k) for p, k, _, _ in table.sent] == [(0, "case-1"), (0, "case-2")]
    waiting = asyncio.ensure_future(view.written())
    await asyncio.sleep(0.05)
    assert not waiting.done()                      # nothing acknowledged yet: the batch must wait
    table.sent[0][3].set_result("ack")
    await asyncio.sleep(0.05)
    assert not waiting.done()                      # one of two
    table.sent[1][3].set_result("ack")
    assert await asyncio.wait_for(waiting, 1) == 2
    assert await view.written() == 0               # nothing new since


async def test_a_failed_changelog_record_is_sent_again_to_its_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.agents.tables as tables

    monkeypatch.setattr(tables, "BACKOFF_INITIAL", 0.01)
    table = ChangelogTable()
    table.partition = 3
    view: TableView[Any] = TableView(table)
    view["case-1"] = {"v": 1}
    view.flush_writes()
    table.partition = 1                            # another event is current by the time of the retry
    waiting = asyncio.ensure_future(view.written())
    table.sent[0][3].set_exception(RuntimeError("NotEnoughReplicas"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(table.sent) == 2:
            break
    assert not waiting.done() and len(table.sent) == 2
    partition, key, value, future = table.sent[1]
    assert (key, value) == ("case-1", {"v": 1})
    future.set_result("ack")
    assert await asyncio.wait_for(waiting, 1) == 1


async def test_a_deletion_is_a_changelog_record_waited_for_too() -> None:
    table = ChangelogTable()
    table.data["old"] = {"v": 0}
    view: TableView[Any] = TableView(table)
    del view["old"]
    assert table.data == {} and [(k, v) for _, k, v, _ in table.sent] == [("old", None)]
    waiting = asyncio.ensure_future(view.written())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    table.sent[0][3].set_result("ack")
    assert await asyncio.wait_for(waiting, 1) == 1


async def test_stopping_leaves_unacknowledged_state_unacknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.agents.tables as tables

    monkeypatch.setattr(tables, "ACK_WAIT_LOG_SECONDS", 0.02)
    table = ChangelogTable()
    view: TableView[Any] = TableView(table)
    view["k"] = "v"
    view.flush_writes()
    with pytest.raises(tables.StateNotWritten):
        await view.written(stopping=lambda: True)


async def test_fausts_own_flush_before_a_commit_can_leave_records_in_its_buffer() -> None:
    """Why ``written()`` exists, on Faust itself: ``Consumer._commit_offsets`` awaits
    ``producer.flush()`` before committing, and the buffer's flush returns as soon as one record takes
    more than 0.1 s to be handed over (a broker round trip under load), with the rest still buffered.
    If a Faust release makes this flush complete, this canary fails: ``written()`` stays correct."""
    import faust
    from faust.transport.producer import ProducerBuffer

    app = faust.App("flush-canary", broker="kafka://127.0.0.1:9")
    buffer = ProducerBuffer(loop=asyncio.get_running_loop())
    buffer.app = app
    handed_over: list[Any] = []

    async def slow_send(record: Any) -> None:  # one send waits 0.15 s for room in the producer's batch
        await asyncio.sleep(0.15)
        handed_over.append(record)

    buffer._send_pending = slow_send  # type: ignore[method-assign, assignment]
    await buffer.start()
    try:
        for i in range(5):
            buffer.put(i)  # type: ignore[arg-type]
        await buffer.flush()
        assert buffer.size > 0 and len(handed_over) < 5
    finally:
        while buffer.size:
            await buffer.flush()
        await buffer.stop()
