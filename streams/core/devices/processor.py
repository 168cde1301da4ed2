"""The IoT feed of one partition: readings → one-minute aggregates, alarm episodes, lift commands and
repeat counters, with state that can be checkpointed and restored exactly.

Readings are keyed by device, so all readings of a device arrive, in order, on one partition, and the
state of a device lives with that partition. The worker keeps one :class:`DeviceProcessor` per assigned
partition; ``streams replay`` and the Ingestor keep one for everything.

State and how it survives a restart or a rebalance (the worker's changelog, streams.agents.lean):

* **device state** (open episodes, the lift's detections per day) changes rarely; each change is taken
  with :meth:`take_dirty` and written, keyed by device id, to a compacted changelog. It remembers ``upto``,
  the offset of the last reading applied to it, so a reading processed again after a crash is not
  applied twice (an episode never reopens, a detection never counts twice);
* **open minute buckets** change with every reading and are never written: the :meth:`checkpoint` names
  the oldest offset an open bucket holds (``replay_from``) and the watermark; a new owner restores the
  checkpoint and re-reads the partition from ``replay_from``, :meth:`rebuild`-ing the buckets from the
  readings up to the checkpoint's ``upto`` and processing normally after that.

Every id is derived from the reading that caused it, so whatever is produced twice is the same record.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

from streams.core.devices.aggregates import AggregatorCheckpoint, MinuteAggregator, MinuteRow
from streams.core.devices.episodes import EpisodeChange, OpenEpisode, episode_step, lift_step
from streams.core.devices.registry import METRIC_EBIKE, METRIC_TILT, METRIC_VIBRATION, AlarmLimits
from streams.core.ids import stable_id
from streams.core.knowledge.sensors import EBIKE_COMMAND, city_day
from streams.core.model import (
    DeviceCommand,
    DeviceEpisodeRow,
    IngestResult,
    IotReading,
    Location,
    SensorAlarmRow,
    Signal,
    TableRows,
)
from streams.core.reject import RejectRecord
from streams.core.times import BadTimestamp, iso_to_ms

if TYPE_CHECKING:  # a runtime import would be circular (knowledge -> sensors -> devices)
    from streams.core.knowledge.knowledge import Knowledge

SENSOR_CATEGORY = {METRIC_VIBRATION: "历史建筑振动超限", METRIC_TILT: "历史建筑倾斜超限"}
EBIKE_CATEGORY = "电动车进电梯"
DEFAULT_LATENESS_MS = 30_000
_TS_CACHE_SIZE = 8192

# make_signal(topic, source, source_kind, source_id, ts_ms, ingest_ms, category_code, confidence, context,
#             location, **details) -> Signal   (the Ingestor's signal builder)
SignalFactory = Callable[..., Signal]


class DeviceState(TypedDict, total=False):
    """What the changelog holds for one device (JSON)."""

    upto: int                            # offset of the last reading applied to this state
    episodes: dict[str, OpenEpisode]     # metric -> open episode
    lift: dict[str, list[int]]           # local day -> e-bike detection times


class PartitionCheckpoint(TypedDict):
    """What the changelog holds for the partition as a whole (JSON)."""

    upto: int              # last input offset processed (-1: none)
    replay_from: int       # re-read from here to rebuild the open minute buckets
    aggregates: AggregatorCheckpoint


class DeviceProcessor:
    """Readings of one partition (or of everything, in replay and tests)."""

    def __init__(self, knowledge: Knowledge, make_signal: SignalFactory, topic: str = "iot.readings",
                 lateness_ms: int = DEFAULT_LATENESS_MS) -> None:
        self.knowledge = knowledge
        self.registry = knowledge.devices
        self.make_signal = make_signal
        self.topic = topic
        self.aggregator = MinuteAggregator(lateness_ms)
        self.states: dict[str, DeviceState] = {}
        self.dirty: set[str] = set()
        self.upto = -1             # last offset processed
        self.restored_upto = -1    # readings up to here only rebuild buckets (see rebuild)
        self.late = 0              # readings whose minute had already closed (not aggregated)
        self._ts: dict[str, int] = {}
        self._rows = knowledge.devices.rows   # device id -> registry row (the hot path's one lookup)
        self._closing: list[MinuteRow] = []   # minutes closed by the reading being processed
        self._bare: set[str] = set()   # devices whose state is only an offset (see checkpointed)

    # ------------------------------------------------------------ reading
    def _ts_ms(self, text: str) -> int:
        ts = self._ts.get(text)
        if ts is None:
            try:
                ts = iso_to_ms(text)
            except BadTimestamp as exc:
                raise RejectRecord(f"field 'ts': {exc}") from exc
            if len(self._ts) >= _TS_CACHE_SIZE:
                self._ts.clear()
            self._ts[text] = ts
        return ts

    def _check(self, record: IotReading) -> tuple[str, str, str, int, float]:
        """(device id, kind, metric, ts_ms, value) of a usable reading; RejectRecord otherwise.
        (The hot path of the city's IoT feed: one registry lookup, cached limits and timestamps.)"""
        device_id, metric, value = record["device_id"], record["metric"], record["value"]
        row = self._rows.get(device_id)
        if row is None:
            raise RejectRecord(f"unknown device {device_id!r} (not in the device registry)")
        if not math.isfinite(value):
            raise RejectRecord(f"field 'value': {value!r} is not a finite number")
        kind = row.kind
        if kind == "sensor":
            limits = self.registry.alarm_limits(device_id)
            if metric not in limits:
                raise RejectRecord(f"device {device_id} has no threshold for metric {metric!r} "
                                   f"(it measures {', '.join(limits)})")
        elif kind == "lift":
            if metric != METRIC_EBIKE:
                raise RejectRecord(f"lift {device_id} reports only {METRIC_EBIKE}, got {metric!r}")
        else:
            raise RejectRecord(f"device {device_id!r} is a {kind}: it reports on camera.alerts, not iot.readings")
        return device_id, kind, metric, self._ts_ms(record["ts"]), float(value)

    def process(self, record: IotReading, offset: int, ingest_ms: int, out: IngestResult) -> None:
        """One schema-valid reading at input ``offset``; its outputs are added to ``out``.
        Raises RejectRecord (nothing changed) for a reading that cannot be used."""
        device_id, kind, metric, ts_ms, value = self._check(record)
        self.upto = offset
        closed = self._closing
        if not self.aggregator.add(device_id, metric, ts_ms, value, offset, closed):
            self.late += 1
        if closed:
            self._emit_minutes(closed, out)
            closed.clear()
        state = self.states.get(device_id)
        if state is not None and offset <= state.get("upto", -1):
            return   # applied before a restart: its effects are in the restored state, its outputs were sent
        if kind == "sensor":
            if state is None and value <= self.registry.alarm_limits(device_id)[metric].threshold:
                return   # the common case: a normal reading, no episode open
            self._sensor(device_id, metric, ts_ms, value, record["ts"], offset, ingest_ms, out)
        elif value >= 0.5:
            self._lift(device_id, ts_ms, value, record["ts"], offset, ingest_ms, out)

    def rebuild(self, record: IotReading, offset: int) -> None:
        """A reading the restored checkpoint already covers: it only refills the open minute buckets."""
        try:
            device_id, _, metric, ts_ms, value = self._check(record)
        except RejectRecord:
            return  # refused the first time too
        self.aggregator.add(device_id, metric, ts_ms, value, offset)

    def advance(self, now_ms: int, out: IngestResult) -> None:
        """Move the watermark to ``now_ms`` (an idle partition's clock): minutes it closes are written."""
        closed: list[MinuteRow] = []
        self.aggregator.observe(now_ms, closed)
        self._emit_minutes(closed, out)

    def finish(self, out: IngestResult) -> None:
        """Close every open minute (the end of a replay)."""
        closed: list[MinuteRow] = []
        self.aggregator.close_all(closed)
        self._emit_minutes(closed, out)

    def _emit_minutes(self, closed: list[MinuteRow], out: IngestResult) -> None:
        if not closed:
            return
        building, limits = self.registry.building, self.registry.alarm_limits
        rows: list[dict[str, Any]] = []
        for row in closed:
            limit = limits(row["device_id"]).get(row["metric"])
            rows.append({**row, "building": building(row["device_id"]),
                         "threshold": limit.threshold if limit else 0.0})
        _append_rows(out, "device_minutes", rows)

    # ------------------------------------------------------------ heritage sensors: episodes
    def _sensor(self, device_id: str, metric: str, ts_ms: int, value: float, ts_text: str, offset: int,
                ingest_ms: int, out: IngestResult) -> None:
        limits = self.registry.alarm_limits(device_id)[metric]
        state = self.states.get(device_id)
        episodes = state.get("episodes", {}) if state else {}
        current = episodes.get(metric)
        if current is None and value <= limits.threshold:
            return   # the common case: a normal reading, nothing open
        # the reading that opens an episode names it; the episode id is also the signal's source id
        new, change = episode_step(current, ts_ms, value, limits, stable_id("episode", device_id, metric, ts_text))
        episodes = dict(episodes)
        if new is None:
            episodes.pop(metric, None)
        else:
            episodes[metric] = new
        self._set_state(device_id, offset, episodes=episodes)
        if change is None:
            return
        if change.kind == "opened":
            self._opened(device_id, metric, limits, change, ingest_ms, out)
        else:
            self._closed(device_id, metric, limits, change, out)

    def _opened(self, device_id: str, metric: str, limits: AlarmLimits, change: EpisodeChange, ingest_ms: int,
                out: IngestResult) -> None:
        sensor = self.registry.sensors[device_id]
        category = self.knowledge.category(SENSOR_CATEGORY[metric])
        assert category is not None
        facts = {"device_id": device_id, "building": sensor.building, "metric": metric, "value": change.value,
                 "threshold": limits.threshold, "clear_level": limits.clear_level,
                 "clear_seconds": limits.clear_ms // 1000, "protection_class": sensor.protection_class,
                 "episode_id": change.episode_id, "peak": change.peak, "duration_ms": 0}
        signal = self.make_signal(self.topic, "iot", "sensor", change.episode_id, change.ts_ms, ingest_ms,
                                  category.code, 1.0, [], sensor.location, reporter_id=device_id,
                                  reporter_kind="sensor", extra=json.dumps(facts, ensure_ascii=False))
        out.signals.append(signal)
        alarm: SensorAlarmRow = {
            "alarm_id": stable_id("alarm", change.episode_id), "device_id": device_id, "building": sensor.building,
            "ts_ms": change.ts_ms, "metric": metric, "value": change.value, "threshold": limits.threshold,
            "street": sensor.location.street or "", "category_code": category.code}
        _append_rows(out, "sensor_alarms", [dict(alarm)])
        out.episodes.append(self._episode_row(device_id, metric, limits, change, sensor.location, category.code,
                                              signal.signal_id))

    def _closed(self, device_id: str, metric: str, limits: AlarmLimits, change: EpisodeChange,
                out: IngestResult) -> None:
        sensor = self.registry.sensors[device_id]
        category = self.knowledge.category(SENSOR_CATEGORY[metric])
        assert category is not None
        out.episodes.append(self._episode_row(device_id, metric, limits, change, sensor.location, category.code,
                                              self.signal_id_of(change.episode_id)))

    def _episode_row(self, device_id: str, metric: str, limits: AlarmLimits, change: EpisodeChange,
                     location: Location, category_code: str, signal_id: str) -> DeviceEpisodeRow:
        return {"episode_id": change.episode_id, "device_id": device_id, "metric": metric,
                "building": self.registry.building(device_id), "street": location.street or "",
                "category_code": category_code, "status": "open" if change.kind == "opened" else "closed",
                "ts_ms": change.ts_ms, "opened_ms": change.opened_ms, "closed_ms": change.closed_ms,
                "peak": change.peak, "peak_ms": change.peak_ms, "duration_ms": change.duration_ms,
                "threshold": limits.threshold, "clear_level": limits.clear_level, "signal_id": signal_id,
                "version": 1 if change.kind == "opened" else 2}

    # ------------------------------------------------------------ lifts: e-bike detections
    def _lift(self, device_id: str, ts_ms: int, value: float, ts_text: str, offset: int, ingest_ms: int,
              out: IngestResult) -> None:
        lift = self.registry.lifts[device_id]
        # The lift announces at once (劝阻广播); the case comes when the same lift repeats.
        out.commands.append(DeviceCommand(stable_id("cmd", device_id, ts_text), device_id, ts_ms, EBIKE_COMMAND,
                                          ts_text))
        state = self.states.get(device_id) or {}
        day = city_day(ts_ms)
        days, count = lift_step(state.get("lift", {}), day, ts_ms)
        self._set_state(device_id, offset, lift=days)
        limit = self.knowledge.kb.ebike_repeat_per_day
        category = self.knowledge.category(EBIKE_CATEGORY)
        assert category is not None
        # every detection is on the wall's sensor board (by building and lift), case or not
        detection: SensorAlarmRow = {
            "alarm_id": stable_id("alarm", device_id, ts_text, METRIC_EBIKE), "device_id": device_id,
            "building": lift.building, "ts_ms": ts_ms, "metric": METRIC_EBIKE, "value": value,
            "threshold": float(limit), "street": lift.location.street or "", "category_code": category.code}
        _append_rows(out, "sensor_alarms", [dict(detection)])
        if count == limit:
            facts = {"device_id": device_id, "building": lift.building, "day": day, "count": count, "limit": limit}
            out.signals.append(self.make_signal(
                self.topic, "iot", "sensor", f"{device_id}@{day}#ebike", ts_ms, ingest_ms, category.code, 1.0, [],
                lift.location, reporter_id=device_id, reporter_kind="sensor",
                extra=json.dumps(facts, ensure_ascii=False)))

    def signal_id_of(self, episode_id: str) -> str:
        """The one signal of an episode (the Ingestor's signal ids: stable_id("sig", topic, source id))."""
        return stable_id("sig", self.topic, episode_id)

    def lift_count(self, device_id: str, day: str) -> int:
        return len((self.states.get(device_id) or {}).get("lift", {}).get(day, []))

    def open_episode(self, device_id: str, metric: str) -> OpenEpisode | None:
        return (self.states.get(device_id) or {}).get("episodes", {}).get(metric)

    # ------------------------------------------------------------ state
    def _set_state(self, device_id: str, offset: int, **parts: Any) -> None:
        state: DeviceState = dict(self.states.get(device_id) or {})  # type: ignore[assignment]
        for key, value in parts.items():
            if value:
                state[key] = value  # type: ignore[literal-required]
            else:
                state.pop(key, None)  # type: ignore[misc]
        # Even with nothing left open the state keeps ``upto`` until a checkpoint covers it (see
        # checkpointed): re-processed readings of this device must not act again.
        state["upto"] = offset
        self.states[device_id] = state
        self.dirty.add(device_id)
        if len(state) == 1:
            self._bare.add(device_id)
        else:
            self._bare.discard(device_id)

    def checkpointed(self, upto: int) -> None:
        """A checkpoint up to ``upto`` is durable: readings up to there are never applied again, so device
        states that only remember an offset up to there are forgotten (a tombstone in the changelog)."""
        for device_id in [d for d in self._bare if self.states[d]["upto"] <= upto]:
            del self.states[device_id]
            self._bare.discard(device_id)
            self.dirty.add(device_id)

    def take_dirty(self) -> dict[str, DeviceState | None]:
        """Device states changed since the last call (None: forget the device)."""
        dirty, self.dirty = self.dirty, set()
        return {device_id: self.states.get(device_id) for device_id in sorted(dirty)}

    def checkpoint(self) -> PartitionCheckpoint:
        start = self.aggregator.replay_from()
        return {"upto": self.upto, "replay_from": self.upto + 1 if start is None else start,
                "aggregates": self.aggregator.checkpoint()}

    def restore(self, checkpoint: PartitionCheckpoint | None, states: Mapping[str, DeviceState]) -> int | None:
        """Take over a partition: its device states and checkpoint. Returns the offset to re-read the
        partition from (None: no checkpoint, start where the consumer group left off)."""
        self.states = {k: cast(DeviceState, dict(v)) for k, v in states.items() if v}
        self._bare = {k for k, v in self.states.items() if set(v) == {"upto"}}
        self.dirty = set()
        if checkpoint is None:
            return None
        self.aggregator.restore(checkpoint["aggregates"])
        self.upto = self.restored_upto = int(checkpoint["upto"])
        return int(checkpoint["replay_from"])


def _append_rows(out: IngestResult, table: str, rows: list[dict[str, Any]]) -> None:
    existing: TableRows | None = out.rows.get(table)
    if existing is None:
        out.rows[table] = rows
    else:
        cast(list[dict[str, Any]], existing).extend(rows)
