"""Alarm episodes with hysteresis and the lift repeat counter: the state machines against their definition."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.devices.episodes import EpisodeChange, OpenEpisode, episode_step, lift_step
from streams.core.devices.registry import AlarmLimits

LIMITS = AlarmLimits(threshold=2.5, clear_level=2.0, clear_ms=300_000)


Readings = list[tuple[int, float]]


def fold(readings: Readings, limits: AlarmLimits = LIMITS) -> tuple[list[EpisodeChange], OpenEpisode | None]:
    state: OpenEpisode | None = None
    changes: list[EpisodeChange] = []
    for ts, value in readings:
        state, change = episode_step(state, ts, value, limits, f"ep@{ts}")
        if change is not None:
            changes.append(change)
    return changes, state


def expected_episodes(readings: Readings, limits: AlarmLimits = LIMITS) -> list[tuple[int, int | None, float]]:
    """The definition, written as a scan over in-order readings: an episode opens at a reading above the
    threshold and closes at the first later reading r such that every reading from the start of r's run of
    readings at or below the clear level up to r is at or below it, and r is clear_ms or more after that start.
    Returns (opened at, closed at or None, peak)."""
    episodes = []
    i = 0
    while i < len(readings):
        if readings[i][1] <= limits.threshold:
            i += 1
            continue
        opened, peak, run_start, closed = readings[i][0], readings[i][1], None, None
        j = i + 1
        while j < len(readings):
            ts, value = readings[j]
            peak = max(peak, value)
            if value > limits.clear_level:
                run_start = None
            else:
                run_start = ts if run_start is None else run_start
                if ts - run_start >= limits.clear_ms:
                    closed = ts
                    break
            j += 1
        episodes.append((opened, closed, peak))
        i = j + 1
    return episodes


# steps that add up to the clear period exactly, and odd ones
steps = st.one_of(st.sampled_from([0, 60_000, 100_000, 150_000, 300_000]), st.integers(0, 240_000))
in_order = st.lists(st.tuples(steps, st.sampled_from([0.5, 1.9, 2.0, 2.2, 2.5, 2.6, 3.4, 9.0])),
                    max_size=80).map(lambda steps: [(sum(d for d, _ in steps[:k + 1]), v) for k, (_, v) in
                                                   enumerate(steps)])


@settings(max_examples=300, deadline=None)
@given(in_order)
def test_episodes_follow_their_definition(readings: list[tuple[int, float]]) -> None:
    changes, state = fold(readings)
    got = []
    for change in changes:
        if change.kind == "opened":
            got.append([change.opened_ms, None, change.peak])
        else:
            assert got and got[-1][1] is None and got[-1][0] == change.opened_ms
            got[-1][1:] = [change.closed_ms, change.peak]
    if state is not None:  # the open episode's peak so far
        assert got and got[-1][1] is None
        got[-1][2] = state["peak"]
    assert [tuple(e) for e in got] == expected_episodes(readings)


@settings(max_examples=200, deadline=None)
@given(in_order)
def test_opened_and_closed_alternate_and_one_signal_per_episode(readings: list[tuple[int, float]]) -> None:
    changes, _ = fold(readings)
    kinds = [c.kind for c in changes]
    assert kinds == (["opened", "closed"] * len(kinds))[:len(kinds)]
    for closed in (c for c in changes if c.kind == "closed"):
        assert closed.duration_ms == closed.closed_ms - closed.opened_ms >= LIMITS.clear_ms
        assert closed.value <= LIMITS.clear_level


def test_a_building_hovering_around_its_threshold_is_one_episode() -> None:
    """The seed's problem: a vibration that hovers around the threshold for ten minutes, a reading a second,
    used to raise an alarm (and a signal) per reading above the line."""
    readings = [(i * 1000, 2.6 if i % 3 else 2.3) for i in range(600)]                # 10 min around 2.5
    readings += [(600_000 + i * 1000, 1.2) for i in range(400)]                        # calm for 400 s
    changes, state = fold(readings)
    assert [c.kind for c in changes] == ["opened", "closed"] and state is None
    closed = changes[1]
    assert closed.peak == 2.6 and closed.closed_ms == 600_000 + 300_000 and closed.duration_ms == 899_000  # from 1 s


def test_a_reading_above_the_clear_level_restarts_the_quiet_clock() -> None:
    changes, state = fold([(0, 3.0), (60_000, 1.0), (200_000, 2.1), (260_000, 1.0), (500_000, 1.0)])
    assert [c.kind for c in changes] == ["opened"] and state is not None and state["below_ms"] == 260_000
    changes, state = fold([(0, 3.0), (60_000, 1.0), (200_000, 2.1), (260_000, 1.0), (560_000, 1.0)])
    assert [c.kind for c in changes] == ["opened", "closed"] and changes[1].closed_ms == 560_000


def test_out_of_order_readings_raise_the_peak_but_not_the_clock() -> None:
    changes, state = fold([(100_000, 3.0), (200_000, 1.0), (150_000, 4.0), (500_000, 1.0)])
    assert [c.kind for c in changes] == ["opened", "closed"] and changes[1].peak == 4.0
    changes, state = fold([(100_000, 3.0), (200_000, 1.0), (150_000, 1.0), (450_000, 1.0)])
    assert [c.kind for c in changes] == ["opened"]  # the quiet clock started at 200 s, not 150 s


def test_state_is_plain_json_and_steps_never_mutate_it() -> None:
    state, _ = episode_step(None, 0, 3.0, LIMITS, "ep")
    assert state is not None
    frozen = json.dumps(state, sort_keys=True)
    episode_step(state, 1000, 1.0, LIMITS, "ep2")
    assert json.dumps(state, sort_keys=True) == frozen
    restored = json.loads(frozen)
    assert episode_step(restored, 1000, 1.0, LIMITS, "x") == episode_step(state, 1000, 1.0, LIMITS, "x")


@given(st.lists(st.tuples(st.sampled_from(["2026-11-20", "2026-11-21", "2026-11-22"]), st.integers(0, 5)),
                max_size=30).map(sorted))
def test_lift_counts_distinct_detections_per_day(detections: list[tuple[str, int]]) -> None:
    days: dict[str, list[int]] = {}
    for k, (day, ts) in enumerate(detections):
        days, count = lift_step(days, day, ts)
        assert count == len({t for d, t in detections[:k + 1] if d == day})   # a re-delivery counts once
        assert len(days) <= 2 and json.loads(json.dumps(days)) == days


def test_lift_forgets_days_beyond_the_kept_ones() -> None:
    days, _ = lift_step({}, "2026-11-20", 1)
    days, _ = lift_step(days, "2026-11-21", 2)
    days, count = lift_step(days, "2026-11-22", 3)
    assert sorted(days) == ["2026-11-21", "2026-11-22"] and count == 1
    days, count = lift_step(days, "2026-11-19", 0)   # far too late: its day is gone
    assert count == 0 and sorted(days) == ["2026-11-21", "2026-11-22"]
