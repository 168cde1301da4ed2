"""The ClickHouse sink's mapping and batching without Kafka or ClickHouse: records of the derived topics
in (as aiokafka hands them over), one insert per table per batch out. The inserts themselves run
against chdb and clickhouse-server in tests/integration and tests/e2e."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import (
    CASE_EVENTS,
    CASE_INPUTS,
    CASES,
    DISPATCHES,
    HOTLINE_CALLS,
    IOT_COMMANDS,
    SLA_ALERTS,
    STORE_ROWS,
    TRIAGE,
    TopicNames,
    dlq,
)
from streams.core.model import Signal
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.sinks.clickhouse import ClickHouseSink
from streams.testing import TestingSource

PREFIX = "t9"
SIGNAL = Signal(signal_id="sig-1", source="hotline", source_kind="12345", source_id="C1", ts_ms=1_795_138_200_000,
                ingest_ms=1_795_138_201_000, category_code="E0601", category_name="群租", confidence=0.91,
                street_code="XH07", street="虹梅街道", handled_on_spot=None)
DISPATCH = {"dispatch_id": "d1", "case_id": "XH07-20261120-0a1b2c3d", "ts_ms": 5, "departments": ["房管办", "物业公司"],
            "level": 3, "category_code": "E0601", "category_name": "群租", "deadline_ms": 9, "street": "虹梅街道",
            "kb_version": "kb-1"}


class RecordingStore:
    """The store interface the sink writes to (normalize + insert_normalized, insert, a probe), keeping every
    insert; ``normalize`` passes rows through as they are."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[Any]]] = []

    def normalize(self, table: str, row: dict[str, Any]) -> Any:
        return row

    def insert_normalized(self, table: str, rows: list[Any]) -> None:
        self.inserts.append((table, rows))

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.inserts.append((table, rows))

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return [{"one": 1}]


@pytest.fixture()
def metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry())


@pytest.fixture()
def sink(metrics: PipelineMetrics) -> ClickHouseSink:
    return ClickHouseSink(Settings(topic_prefix=PREFIX, kafka_bootstrap="127.0.0.1:1"), RecordingStore(), registry(),
                          metrics)


def consumer_records(recs: list[records.TopicRecord | tuple[str, Any]]) -> list[Any]:
    items = [(r.topic, r.key, r.value) if isinstance(r, records.TopicRecord) else (r[0], None, r[1]) for r in recs]
    return TestingSource(items, prefix=PREFIX).consumer_records()


def test_it_reads_every_derived_topic_with_a_table(sink: ClickHouseSink) -> None:
    assert sink.physical == [TopicNames(PREFIX).name(t) for t in records.SINK_TOPICS]
    assert f"{PREFIX}.{dlq(HOTLINE_CALLS)}" in sink.physical and f"{PREFIX}.{dlq(CASE_INPUTS)}" in sink.physical


def test_rows_of_each_kind_of_record(sink: ClickHouseSink) -> None:
    state = {"case_id": "XH07-20261120-0a1b2c3d", "version": 3, "status": "handle", "lat": None, "origin": None}
    transition = {"event_id": "e1", "case_id": state["case_id"], "to_stage": "handle", "from_stage": "dispatch",
                  "action": "dispatch", "ts_ms": 5, "actor_kind": "system", "actor_id": "auto", "detail": "{}"}
    recs = consumer_records([
        records.signal_input(SIGNAL),
        records.case_record(state),
        records.TopicRecord(CASE_EVENTS, {**{k: transition.get(k) for k in ("event_id", "case_id", "ts_ms", "action",
                                                                            "actor_kind", "actor_id")},
                                          "stage": "handle", "detail": json.dumps(transition)}),
        records.TopicRecord(DISPATCHES, DISPATCH),
        records.TopicRecord(SLA_ALERTS, {"alert_id": "a1", "case_id": state["case_id"], "ts_ms": 5, "stage": "handle",
                                         "light": "red", "kind": "sla_red", "departments": ["房管办"],
                                         "deadline_ms": None}),
        (dlq(HOTLINE_CALLS), records.dead_letter_value(HOTLINE_CALLS, 1, 2, "why", 3, b"{bad", b"k")),
        records.store_rows_record("zero_reports", [{"report_id": "R1", "community": None}]),
        records.tick_input(5),
    ])
    before = int(time.time() * 1000)
    got = [sink.rows_of(rec) for rec in recs]
    [signals] = got[0][1]
    assert got[0][0] == "signals" and signals["stored_ms"] >= before and "handled_on_spot" not in signals
    assert set(signals) - {"stored_ms"} <= set(records.SIGNAL_COLUMNS)
    assert got[1] == ("cases", [{"case_id": state["case_id"], "version": 3, "status": "handle", "lat": None}])
    assert got[2] == ("case_transitions", [transition])
    assert got[3] == ("dispatches", [{**DISPATCH, "units": [], "primary_department": "房管办",
                                      "primary_unit": "房管办"}])
    assert got[4][0] == "sla_alerts" and "deadline_ms" not in got[4][1][0]
    assert got[5] == ("dead_letters", [{"topic": HOTLINE_CALLS, "partition": 1, "offset": 2, "reason": "why",
                                        "ts_ms": 3, "original": "{bad", "key": "k"}])
    assert got[6] == ("zero_reports", [{"report_id": "R1"}])
    assert got[7] == ("", [])


def test_a_dispatch_without_departments_has_an_empty_primary(sink: ClickHouseSink) -> None:
    [rec] = consumer_records([records.TopicRecord(DISPATCHES, {**DISPATCH, "departments": []})])
    assert sink.rows_of(rec)[1][0]["primary_department"] == ""


async def test_a_batch_is_one_insert_per_table_and_unreadable_records_are_set_aside(sink: ClickHouseSink,
                                                                                   metrics: PipelineMetrics) -> None:
    triage = {"triage_id": "t1", "topic": HOTLINE_CALLS, "reason": "why", "ts_ms": 1, "record": "{}",
              "best_category": None, "confidence": None}
    recs = consumer_records([records.signal_input(SIGNAL), records.TopicRecord(TRIAGE, triage),
                             records.signal_input(Signal(**{**SIGNAL.__dict__, "signal_id": "sig-2"})),
                             records.TopicRecord(IOT_COMMANDS, {"command_id": "c", "device_id": "d", "ts_ms": 1,
                                                                "command": "x", "reading_ts": None})])
    garbage = TestingSource([(CASES, None, b"\x00not avro")], prefix=PREFIX).consumer_records()
    await sink.deliver(await sink.prepare(recs + garbage))
    store = sink.store
    assert [(table, len(rows)) for table, rows in store.inserts] == [("signals", 2), ("triage", 1),
                                                                      ("sink_dead_letters", 2)]
    assert {(d["topic"], d["target_table"]) for d in store.inserts[2][1]} == {(IOT_COMMANDS, ""), (CASES, "")}
    assert store.inserts[1][1] == [{"triage_id": "t1", "topic": HOTLINE_CALLS, "reason": "why", "ts_ms": 1,
                                    "record": "{}"}]
    assert metrics.registry.get_sample_value("citygrid_dead_letters_total",
                                             {"topic": CASES, "reason": "sink_unreadable"}) == 1
    assert metrics.registry.get_sample_value("citygrid_dead_letters_total",
                                             {"topic": IOT_COMMANDS, "reason": "sink_unreadable"}) == 1
    assert metrics.registry.get_sample_value("citygrid_clickhouse_rows_written_total", {"table": "signals"}) == 2


def test_store_rows_records_are_what_the_emitter_sends() -> None:
    """store.rows is the one topic whose table travels in the record."""
    record = records.store_rows_record("inspector_tracks", [{"a": 1}, {"a": 2}])
    assert record.topic == STORE_ROWS and records.rows_of(STORE_ROWS, record.value) == (
        "inspector_tracks", [{"a": 1}, {"a": 2}])
