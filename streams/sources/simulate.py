"""Simulated city feeds to Kafka: the scenario of streams/sources/scenario.py (the whole sample district,
a diurnal pattern, bursts, one problem from several sources, malformed records) played on the live clock at a
configured rate, and optionally departments that act on the cases so they close.

Deterministic with a seed (the sequence of records; their times are the wall clock's).
"""
from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

from streams.bus import clients
from streams.core.times import CITY_TZ
from streams.settings import Settings


class DepartmentActors:
    """Plays the departments and verifiers so the loop closes in a demo: reads case states from the
    ``cases`` topic, reports 处置 done (handled) a little later, then the closer verifies (sometimes
    fails it: rework 返工) and closes 结案 — the originating station/committee for its own cases
    (谁发单、谁验收、谁结案), the centre otherwise."""

    def __init__(self, settings: Settings, names: Any, producer: Any, seed: int, reporters: dict[str, str],
                 delay: tuple[float, float] = (5.0, 25.0)) -> None:
        import threading

        self.settings, self.names, self.producer = settings, names, producer
        self.rng = random.Random(seed ^ 0x5EED)
        self.reporters = reporters  # report id -> reporter id, of the reports this simulator filed
        self.delay = delay
        self.scheduled: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="department-actors", daemon=True)
        self.actions = 0

    def start(self) -> DepartmentActors:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _action(self, case: dict[str, Any], action: str, actor_kind: str, actor_id: str, note: str = "") -> None:
        self.actions += 1
        record = {"action_id": f"SIM-{case['case_id']}-{action}-{self.actions}", "ts": datetime.now(CITY_TZ).isoformat(
            timespec="seconds"), "case_id": case["case_id"], "actor_kind": actor_kind, "actor_id": actor_id,
            "action": action, "note": note or None}
        # keyed by case: one partition keeps a case's actions in order (verify_pass before close)
        self.producer.send(self.names.name("case.actions"), record, key=case["case_id"].encode())

    def _closer(self, case: dict[str, Any]) -> tuple[str, str]:
        if case.get("origin") in ("station", "committee"):
            for source in case.get("sources") or []:
                kind, _, source_id = source.partition(":")
                if kind == case["origin"] and source_id in self.reporters:
                    return kind, self.reporters[source_id]
        return "center", "区网格中心"

    def _due(self, case: dict[str, Any], now: float) -> None:
        status = case["status"]
        key = (case["case_id"], f"{status}:{case.get('rework_count', 0)}")
        if status not in ("handle", "verify") or not case.get("departments"):
            return
        when = self.scheduled.setdefault(key, now + self.rng.uniform(*self.delay))
        if when > now or when < 0:
            return
        self.scheduled[key] = -1.0  # done
        if status == "handle":
            self._action(case, "handled", "department", case["departments"][0], "已处置")
            return
        kind, actor = self._closer(case)
        if self.rng.random() < 0.1 and not case.get("rework_count"):
            self._action(case, "verify_fail", kind, actor, "复查未整改到位")
            return
        self._action(case, "verify_pass", kind, actor, "核查通过")
        self._action(case, "close", kind, actor, "同意结案")

    def _run(self) -> None:
        from kafka import KafkaConsumer

        from streams.bus.codec import registry

        codec = registry()
        consumer = KafkaConsumer(self.names.name("cases"), **clients.simulator_cases_consumer(self.settings))
        latest: dict[str, dict[str, Any]] = {}
        try:
            while not self.stop.is_set():
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        state = json.loads(codec.decode(message.value)[1]["state"])
                        latest[state["case_id"]] = state
                now = time.monotonic()
                for case_id, case in list(latest.items()):
                    self._due(case, now)
                    if case["status"] in ("closed", "void"):
                        latest.pop(case_id, None)
        finally:
            consumer.close()


# The field that keys each feed's Kafka messages (the same choice as the gateway's).
KEY_FIELDS = {"hotline.calls": "call_id", "field.reports": "report_id", "field.tracks": "inspector_id",
              "iot.readings": "device_id", "camera.alerts": "alert_id", "registry.changes": "change_id"}


def record_key(topic: str, record: dict[str, Any]) -> bytes | None:
    value = record.get(KEY_FIELDS.get(topic, ""))
    return str(value).encode("utf-8") if value is not None else None


def run(settings: Settings, rate: float, duration: float | None, seed: int, sources: set[str], knowledge: Any,
        count: int | None = None, act: bool = False, malformed: float = 0.005) -> int:
    """Produce simulated feeds at ``rate`` records/s for ``duration`` s (or ``count`` records), a share
    ``malformed`` of them failing their schema. Returns the count."""
    from kafka import KafkaProducer

    from streams.bus.topics import TopicNames
    from streams.sources.scenario import ScenarioConfig, scenario_for

    names = TopicNames(settings.topic_prefix)
    scenario = scenario_for(knowledge, seed, ScenarioConfig(malformed_share=malformed), sources=sorted(sources))
    # raw bytes (a malformed record cut off in transit) go out as they are, everything else as JSON
    producer = KafkaProducer(**clients.simulator_producer(settings), value_serializer=lambda v: v if isinstance(
        v, bytes) else json.dumps(v, ensure_ascii=False).encode("utf-8"))
    sent = 0
    started = time.monotonic()
    reporters: dict[str, str] = {}
    actors = DepartmentActors(settings, names, producer, seed, reporters).start() if act else None
    try:
        while count is None or sent < count:
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            ahead = sent / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
            item = scenario.next_at(int(time.time() * 1000))
            if item is None:  # every selected feed is silent at this hour
                time.sleep(1.0)
                continue
            topic, record = item.topic, item.value
            # keyed like the gateway does: a device's readings and an inspector's fixes stay on one partition
            # (their keyed state lives with it), a record sent twice lands where the first one did
            key = record_key(topic, record) if isinstance(record, dict) else None
            producer.send(names.name(topic), record, key=key)
            if topic == "field.reports" and isinstance(record, dict) and not item.malformed:
                reporters[record["report_id"]] = record["reporter_id"]
            sent += 1
    except KeyboardInterrupt:
        pass
    finally:
        if actors is not None:
            actors.close()
        producer.flush()
        producer.close()
    return sent
