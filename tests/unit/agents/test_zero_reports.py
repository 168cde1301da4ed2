"""Zero-reports 零报告 through the adapters: a registered station's reports travel to the case.inputs partition of
its street; at the deadline the lifecycle adapter alerts the street centre for each station that reported
neither an item nor 无事报平安 (sla.alerts + webhook), once, and only on the partition that owns the station."""
from __future__ import annotations

import io
import json
from datetime import datetime, time
from pathlib import Path
from typing import Any

from streams.agents.ingest import IngestAdapter
from streams.agents.lifecycle import LifecycleAdapter, WebhookFanout, street_partitions
from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import CASE_INPUTS, FIELD_REPORTS, SLA_ALERTS, WEBHOOK_DELIVERIES
from streams.core.cases.engine import CaseEngine
from streams.core.field import ZeroReportBook
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.times import CITY_TZ
from streams.metrics import PipelineMetrics
from streams.replay import replay
from streams.settings import Settings
from streams.testing import TestingSource, run
from tests.unit.agents.support import NAMES, PREFIX, clock

FRIDAY = datetime(2026, 11, 20, tzinfo=CITY_TZ)
DEADLINE = time(17, 0)


def at(hour: int, minute: int = 0) -> datetime:
    return FRIDAY.replace(hour=hour, minute=minute)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def station_report(station: str, when: datetime, zero: bool = True, **kw: Any) -> dict[str, Any]:
    base = {"report_id": f"R-{station}-{when:%H%M}", "reporter_id": station, "reporter_kind": "station",
            "reported_at": when.isoformat(), "zero_report": zero or None}
    if not zero:
        base.update(category="暴露垃圾", address="钦江路15号", text="小区门口垃圾堆没人清")
    return {**base, **kw}


async def test_a_station_report_is_a_case_input_keyed_by_its_street(kb: Knowledge, metrics: PipelineMetrics) -> None:
    adapter = IngestAdapter(Ingestor(kb), registry(), metrics, NAMES, clock=clock)
    items = [(FIELD_REPORTS, None, station_report("STA-001", at(9))),                     # 怡桂苑: 虹梅街道 XH07
             (FIELD_REPORTS, None, station_report("STA-002", at(9), zero=False)),         # an item counts too
             (FIELD_REPORTS, None, {**station_report("INS-001", at(9)), "reporter_kind": "inspector"}),
             (FIELD_REPORTS, None, station_report("STA-999", at(9)))]                     # not a registered one
    sink = await run(adapter.handle, TestingSource(items, prefix=PREFIX, encoding="json"))
    inputs = [r for r in sink.produced(CASE_INPUTS) if r.value["kind"] == "station_report"]
    assert [(r.key, json.loads(r.value["report"])["station_id"]) for r in inputs] == [("XH07", "STA-001"),
                                                                                       ("XH03", "STA-002")]


def world(kb: Knowledge, metrics: PipelineMetrics, deliveries: Any = None) -> tuple[LifecycleAdapter, dict]:
    states: dict[str, Any] = {}
    book = ZeroReportBook(kb.field, states, DEADLINE, lambda d: d.weekday() < 5, kb.city.unit_of)
    adapter = LifecycleAdapter(CaseEngine(kb, {}, {}), registry(), metrics, NAMES, clock=clock,
                               zero_reports=book, owns=street_partitions(4), **({"deliveries": deliveries}
                                                                                if deliveries else {}))
    return adapter, states


def inputs(*items: records.TopicRecord, partition: int) -> TestingSource:
    return TestingSource([(r.topic, r.key, r.value, partition) for r in items], prefix=PREFIX)


async def test_stations_without_a_report_by_the_deadline_are_alerted_once(kb: Knowledge, metrics: PipelineMetrics,
                                                                          tmp_path: Path) -> None:
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text("endpoints:\n  街道网格中心:\n    url: http://127.0.0.1:9/hook\n    secret: 0123456789abcdef\n"
                     "    kinds: [zero_report_missing]\n", encoding="utf-8")
    adapter, states = world(kb, metrics, WebhookFanout(hooks))
    owns = street_partitions(4)
    alerted: dict[str, int] = {}
    for partition in range(4):
        mine = {s.id for s in kb.field.stations.values() if owns(s.street_code, partition)}
        reported = sorted(mine)[:1]
        feed = [records.tick_input(ms(at(8)))]   # the first tick starts the partition's clock
        feed += [records.station_report_input({"station_id": s, "street_code": kb.field.stations[s].street_code,
                                               "ts_ms": ms(at(10))}) for s in reported]
        feed += [records.tick_input(ms(at(16, 59))), records.tick_input(ms(at(17))), records.tick_input(ms(at(18)))]
        sink = await run(adapter.handle, inputs(*feed, partition=partition))
        alerts = sink.values(SLA_ALERTS)
        assert {a["case_id"].split("-20261120")[0][3:] for a in alerts} == mine - set(reported)
        assert all(a["kind"] == "zero_report_missing" and a["ts_ms"] == ms(at(17)) for a in alerts)
        deliveries = sink.values(WEBHOOK_DELIVERIES)
        assert len(deliveries) == len(alerts) and all(d["kind"] == "zero_report_missing" for d in deliveries)
        for d in deliveries:
            body = json.loads(d["payload"])
            assert body["department"] == "街道网格中心" and body["case"]["case_id"].startswith("ZR-STA-")
        for a in alerts:
            alerted[a["case_id"]] = alerted.get(a["case_id"], 0) + 1
    assert len(alerted) == len(kb.field.stations) - sum(1 for p in range(4) if any(
        owns(s.street_code, p) for s in kb.field.stations.values()))
    assert set(alerted.values()) == {1}   # each station-day once, on the one partition that owns it
    assert json.loads(json.dumps(states)) == states   # the state is plain JSON (a Faust table value)


def replay_lines(kb: Knowledge) -> list[str]:
    """Monday and Tuesday: every station reports on Monday but STA-003 (late, after the deadline); on Tuesday
    only STA-001 reports."""
    monday = datetime(2026, 11, 23, tzinfo=CITY_TZ)
    lines = []
    for station in sorted(kb.field.stations):
        when = monday.replace(hour=18 if station == "STA-003" else 9)
        lines.append({"topic": FIELD_REPORTS, "value": station_report(station, when)})
    lines.append({"topic": FIELD_REPORTS, "value": station_report("STA-001", monday.replace(day=24, hour=9))})
    lines.append({"topic": FIELD_REPORTS, "value": station_report("STA-002", monday.replace(day=24, hour=23))})
    lines.insert(0, {"topic": FIELD_REPORTS, "value": station_report("STA-001", monday.replace(hour=7))})
    return [json.dumps(line, ensure_ascii=False) for line in lines]


class Rows:
    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.tables.setdefault(table, []).extend(rows)


def test_replay_raises_the_same_alerts_every_time(kb: Knowledge) -> None:
    results = []
    for _ in range(2):
        store = Rows()
        report = replay(replay_lines(kb), Settings(), store, knowledge=kb, err=io.StringIO())
        results.append(sorted((r["case_id"], r["ts_ms"]) for r in store.tables.get("sla_alerts", [])
                              if r["kind"] == "zero_report_missing"))
        assert report.zero_report_alerts == len(results[-1])
    assert results[0] == results[1]
    missing = {case_id for case_id, _ in results[0]}
    assert "ZR-STA-003-20261123" in missing                 # reported after the deadline
    assert {f"ZR-{s}-20261124" for s in kb.field.stations if s != "STA-001"} <= missing
    assert not any(c.startswith("ZR-STA-001") for c in missing)
    assert len(missing) == 1 + len(kb.field.stations) - 1
