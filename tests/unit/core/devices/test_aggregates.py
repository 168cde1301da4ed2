"""One-minute aggregates: exactly the rows a GROUP BY over the on-time readings gives, written when the
watermark closes the minute, late readings left out by the documented rule."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.devices.aggregates import MINUTE_MS, MinuteAggregator, MinuteRow

LATENESS = 30_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS

readings = st.lists(st.tuples(st.sampled_from(["D1", "D2", "D3"]), st.sampled_from(["v", "t"]),
                              st.integers(-90_000, 240_000), st.sampled_from([0.0, 1.5, -2.0, 3.25, 7.0])),
                    max_size=120).map(lambda rs: [(d, m, T0 + ts, v) for d, m, ts, v in rs])


def reference(items: list[tuple[str, str, int, float]]) -> tuple[dict[tuple[str, str, int], MinuteRow], int]:
    """The rule, stated directly: a reading is late when its minute started before the watermark (newest
    event time of the readings before it, minus the lateness) rounded down to the minute."""
    groups: dict[tuple[str, str, int], list[tuple[int, int, float]]] = {}
    newest: int | None = None
    late = 0
    for i, (device, metric, ts, value) in enumerate(items):
        minute = ts - ts % MINUTE_MS
        boundary = 0 if newest is None else (newest - LATENESS) - (newest - LATENESS) % MINUTE_MS
        if minute < boundary:
            late += 1
        else:
            groups.setdefault((device, metric, minute), []).append((ts, i, value))
        newest = ts if newest is None else max(newest, ts)
    rows = {}
    for (device, metric, minute), values in groups.items():
        vs = [v for _, _, v in values]
        rows[(device, metric, minute)] = {"device_id": device, "metric": metric, "minute_ms": minute, "n": len(vs),
                                          "min": min(vs), "max": max(vs), "sum": sum(vs),
                                          "last": max(values, key=lambda x: (x[0], x[1]))[2]}
    return rows, late


@settings(max_examples=300, deadline=None)
@given(readings)
def test_rows_are_the_group_by_of_on_time_readings(items: list[tuple[str, str, int, float]]) -> None:
    agg = MinuteAggregator(LATENESS)
    rows: list[MinuteRow] = []
    late = 0
    for offset, (device, metric, ts, value) in enumerate(items):
        late += not agg.add(device, metric, ts, value, offset, rows)
    written_early = len(rows)
    agg.close_all(rows)
    expected, expected_late = reference(items)
    keys = [(r["device_id"], r["metric"], r["minute_ms"]) for r in rows]
    assert len(keys) == len(set(keys))                         # one row per device, metric and minute
    assert {k: r for k, r in zip(keys, rows, strict=True)} == expected
    assert late == expected_late
    for row in rows[:written_early]:                           # written early only once the watermark passed it
        assert row["minute_ms"] + MINUTE_MS <= max(ts for _, _, ts, _ in items) - LATENESS


def test_a_minute_closes_when_the_watermark_passes_its_end() -> None:
    agg = MinuteAggregator(LATENESS)
    rows: list[MinuteRow] = []
    agg.add("D1", "v", T0 + 1_000, 1.0, 0, rows)
    agg.add("D1", "v", T0 + 59_000, 3.0, 1, rows)
    agg.add("D1", "v", T0 + 89_999, 2.0, 2, rows)          # watermark T0 + 59.999 s: still open
    assert rows == [] and agg.replay_from() == 0
    agg.add("D2", "v", T0 + 90_000, 5.0, 3, rows)          # watermark reaches T0 + 60 s
    assert rows == [{"device_id": "D1", "metric": "v", "minute_ms": T0, "n": 2, "min": 1.0, "max": 3.0, "sum": 4.0,
                     "last": 3.0}]
    assert agg.replay_from() == 2                           # the oldest reading an open bucket holds
    assert not agg.add("D1", "v", T0 + 30_000, 9.0, 4, rows)   # late: its minute is written and final


def test_an_idle_partition_closes_by_its_clock() -> None:
    agg = MinuteAggregator(LATENESS)
    rows: list[MinuteRow] = []
    agg.add("D1", "v", T0 + 1_000, 1.0, 0, rows)
    agg.observe(T0 + 200_000, rows)
    assert [r["minute_ms"] for r in rows] == [T0] and agg.replay_from() is None


def test_checkpoint_and_rebuild_restore_the_open_buckets() -> None:
    items = [("D1", "v", T0 + i * 7_000, float(i % 5)) for i in range(40)]
    whole, rows_whole = MinuteAggregator(LATENESS), []
    for offset, (d, m, ts, v) in enumerate(items):
        whole.add(d, m, ts, v, offset, rows_whole)
    whole.close_all(rows_whole)
    first, rows = MinuteAggregator(LATENESS), []
    for offset, (d, m, ts, v) in enumerate(items[:23]):
        first.add(d, m, ts, v, offset, rows)
    checkpoint, start = first.checkpoint(), first.replay_from()
    second = MinuteAggregator(LATENESS)
    second.restore(checkpoint)
    assert start is not None
    for offset in range(start, 23):
        d, m, ts, v = items[offset]
        second.add(d, m, ts, v, offset)
    for offset in range(23, 40):
        d, m, ts, v = items[offset]
        second.add(d, m, ts, v, offset, rows)
    second.close_all(rows)
    assert rows == rows_whole
