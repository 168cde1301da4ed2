"""The IoT feed of a partition: one signal per episode, and state that survives a restart or a rebalance
exactly — a new owner that restores the changelog and re-reads the partition produces nothing new."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.devices.processor import DeviceProcessor
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import IngestResult

TZ = timezone(timedelta(hours=8))
START = datetime(2026, 11, 20, 9, 0, tzinfo=TZ)
INGEST_MS = 1_800_000_000_000
# (device, metric, threshold) of the sample city: 二类 clears at 0.75 x after 300 s, 一类 at 0.7 x after 600 s
CHANNELS = [("HB-WK-V01", "vibration_mm_s", 2.5), ("HB-SQL-V01", "vibration_mm_s", 1.5),
            ("HB-SQL-V01", "tilt_permille", 2.0), ("LIFT-YGY-03-1", "ebike_detected", 1.0)]


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def reading(device: str, metric: str, value: float, at: datetime) -> dict[str, Any]:
    return {"device_id": device, "metric": metric, "value": value, "ts": at.isoformat(timespec="seconds")}


def feed(steps: list[tuple[int, int, float]]) -> list[dict[str, Any]]:
    """(channel, seconds after the previous reading (may be negative: out of order), value x threshold)."""
    out, at = [], START
    for channel, seconds, factor in steps:
        at += timedelta(seconds=seconds)
        device, metric, threshold = CHANNELS[channel]
        value = (1.0 if factor > 1 else 0.0) if metric == "ebike_detected" else round(threshold * factor, 3)
        out.append(reading(device, metric, value, at))
    return out


def identity(result: IngestResult) -> dict[tuple[str, ...], str]:
    """Every output by its idempotency key -> its content (what the store and the case engine dedupe on)."""
    out: dict[tuple[str, ...], str] = {}
    for s in result.signals:
        out[("signal", s.signal_id)] = json.dumps(s.to_dict(), sort_keys=True)
    for c in result.commands:
        out[("command", c.command_id)] = json.dumps(c.__dict__, sort_keys=True)
    for e in result.episodes:
        out[("episode", e["episode_id"], str(e["version"]))] = json.dumps(e, sort_keys=True)
    for table, rows in result.rows.items():
        for row in rows:
            key = (table, str(row["device_id"]), str(row["metric"]), str(row["minute_ms"])) \
                if table == "device_minutes" else (table, str(row["alarm_id"]))
            out[key] = json.dumps(row, sort_keys=True)
    return out


def merge(into: IngestResult, other: IngestResult) -> None:
    into.signals += other.signals
    into.commands += other.commands
    into.episodes += other.episodes
    for table, rows in other.rows.items():
        into.rows.setdefault(table, [])
        into.rows[table] = list(into.rows[table]) + list(rows)  # type: ignore[assignment]


def run(proc: DeviceProcessor, records: list[dict[str, Any]], offsets: range, out: IngestResult) -> None:
    for offset in offsets:
        proc.process(records[offset], offset, INGEST_MS, out)


steps = st.lists(st.tuples(st.sampled_from([0, 0, 0, 0, 1, 2, 3]),   # mostly one channel: its episodes close
                           st.one_of(st.sampled_from([0, 1, 5, 30, 60, 120, 300, 600]), st.integers(-40, 200)),
                           st.sampled_from([0.2, 0.6, 0.72, 0.9, 1.0, 1.05, 1.3, 3.0])),
                 min_size=1, max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps, st.data())
def test_a_new_owner_after_a_crash_produces_nothing_new(kb: Knowledge, plan: list[tuple[int, int, float]],
                                                        data: st.DataObject) -> None:
    """Batches end with: outputs acked, then the changed device states, then the checkpoint, then the commit.
    A crash may fall between any of them: the changelog then holds device states newer than its checkpoint,
    and the group's committed offset may lag both. Whatever the crash point, the union of what both owners
    produced equals what one uninterrupted owner produces."""
    records = feed(plan)
    ingestor = Ingestor(kb)
    whole = ingestor.new_device_processor()
    expected = IngestResult()
    run(whole, records, range(len(records)), expected)
    whole.finish(expected)

    n = len(records)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=3, max_size=3)))
    checkpoint_at, states_at, crash_at = cuts   # offsets processed when each was last persisted / when it died
    first = ingestor.new_device_processor()
    produced = IngestResult()
    changelog: dict[str, Any] = {}
    checkpoint = None
    for end in sorted({checkpoint_at, states_at, crash_at}):
        run(first, records, range(first.upto + 1, end), produced)
        if end <= states_at:
            changelog.update(json.loads(json.dumps(first.take_dirty())))
        if end <= checkpoint_at:
            checkpoint = json.loads(json.dumps(first.checkpoint()))
            first.checkpointed(checkpoint["upto"])

    second = ingestor.new_device_processor()
    start = second.restore(checkpoint, {k: v for k, v in changelog.items() if v is not None})
    resume = 0 if checkpoint is None else checkpoint["upto"] + 1
    if start is not None:
        for offset in range(start, resume):
            second.rebuild(records[offset], offset)
    run(second, records, range(resume, n), produced)
    second.finish(produced)

    got, want = identity(produced), identity(expected)
    assert set(got) == set(want)
    assert all(got[k] == want[k] for k in want)


def test_an_episode_closed_after_the_checkpoint_is_not_reopened_by_the_new_owner(kb: Knowledge) -> None:
    """The crash the device ``upto`` exists for: the changelog has the closed episode (a state holding only
    an offset), the checkpoint is older, and the re-read readings include one above the threshold that
    belonged to the closed episode."""
    records = feed([(0, 0, 1.3), (0, 60, 1.3), (0, 60, 0.2), (0, 300, 0.2), (0, 10, 0.2)])
    ingestor = Ingestor(kb)
    first, produced = ingestor.new_device_processor(), IngestResult()
    run(first, records, range(1), produced)
    checkpoint = json.loads(json.dumps(first.checkpoint()))
    run(first, records, range(1, 4), produced)   # offset 3 closes the episode
    assert [e["status"] for e in produced.episodes] == ["open", "closed"]
    changelog = json.loads(json.dumps(first.take_dirty()))
    assert changelog["HB-WK-V01"] == {"upto": 3}
    second = ingestor.new_device_processor()
    start = second.restore(checkpoint, changelog)
    for offset in range(start or 0, checkpoint["upto"] + 1):
        second.rebuild(records[offset], offset)
    again = IngestResult()
    run(second, records, range(checkpoint["upto"] + 1, len(records)), again)
    assert again.signals == [] and again.episodes == []


def test_one_signal_per_episode_not_per_reading(kb: Knowledge) -> None:
    """The measured seed behaviour: two short episodes of a vibrating building gave 1,685 signals."""
    ingestor = Ingestor(kb)
    proc = ingestor.new_device_processor()
    out = IngestResult()
    at = START
    offset = 0
    for _ in range(2):   # two bursts
        for i in range(900):   # a reading a second, hovering around 2.5 mm/s
            proc.process(reading("HB-WK-V01", "vibration_mm_s", 2.7 if i % 2 else 2.3, at), offset, INGEST_MS, out)
            at, offset = at + timedelta(seconds=1), offset + 1
        for _ in range(400):   # calm
            proc.process(reading("HB-WK-V01", "vibration_mm_s", 0.8, at), offset, INGEST_MS, out)
            at, offset = at + timedelta(seconds=1), offset + 1
    assert len(out.signals) == 2
    assert [(e["status"], e["version"]) for e in out.episodes] == [("open", 1), ("closed", 2)] * 2
    closed = [e for e in out.episodes if e["status"] == "closed"]
    assert all(e["peak"] == 2.7 and e["duration_ms"] == (900 + 300 - 1) * 1000 for e in closed)
    assert [e["signal_id"] for e in closed] == [s.signal_id for s in out.signals]
    assert all(s.reporter_id == "HB-WK-V01" and s.extra_dict()["episode_id"] for s in out.signals)
    assert len(out.rows["sensor_alarms"]) == 2
    minutes = out.rows["device_minutes"]
    assert sum(r["n"] for r in minutes) + proc.aggregator.open_buckets() * 0 <= offset
    assert {r["building"] for r in minutes} == {"武康大楼"} and {r["threshold"] for r in minutes} == {2.5}


def test_unusable_readings_are_refused_and_change_nothing(kb: Knowledge) -> None:
    proc = Ingestor(kb).new_device_processor()
    out = IngestResult()
    for bad, why in [(reading("NOPE", "vibration_mm_s", 1.0, START), "unknown device"),
                     (reading("HB-WK-V01", "humidity", 1.0, START), "no threshold for metric 'humidity'"),
                     (reading("LIFT-YGY-03-1", "vibration_mm_s", 1.0, START), "reports only ebike_detected"),
                     (reading("CAM-XH-001", "vibration_mm_s", 1.0, START), "camera"),
                     ({**reading("HB-WK-V01", "vibration_mm_s", float("nan"), START)}, "finite"),
                     ({**reading("HB-WK-V01", "vibration_mm_s", 1.0, START), "ts": "yesterday"}, "field 'ts'")]:
        with pytest.raises(RejectRecord, match=why):
            proc.process(bad, 0, INGEST_MS, out)
    assert out == IngestResult() and proc.upto == -1 and proc.aggregator.open_buckets() == 0
