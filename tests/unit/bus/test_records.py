"""streams.bus.records: the one mapping from core outputs to topic records and table rows, shared by
the worker, the ClickHouse sink and replay."""
from __future__ import annotations

import io
import json
import re
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.bus import records
from streams.bus.codec import registry
from streams.bus.topics import (
    ACTIONS_REJECTED,
    CASE_EVENTS,
    CASE_INPUTS,
    DISPATCHES,
    HOTLINE_CALLS,
    INTERNAL_SCHEMAS,
    IOT_COMMANDS,
    IOT_READINGS,
    RAW_SCHEMAS,
    SLA_ALERTS,
    STORE_ROWS,
    TRIAGE,
    WEBHOOK_DELIVERIES,
    all_topics,
    dlq,
)
from streams.core.cases.engine import UNLOCATED, CaseEngine, Outputs, make_case_id
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import DeviceCommand, IngestResult, Signal, Triage
from tests.paths import REPO_ROOT

SIGNAL = Signal(signal_id="sig-1", source="hotline", source_kind="12345", source_id="C1", ts_ms=1_795_138_200_000,
                ingest_ms=1_795_138_201_000, category_code="E0601", category_name="群租", confidence=0.91,
                context=["compound"], lat=31.17, lon=121.41, cell="8a", community="怡桂苑", street="虹梅街道",
                street_code="XH07", district="徐汇区", address="钦江路15号", text="群租", reporter_id="caller-1",
                reporter_kind="12345", handled_on_spot=True)


def encodable(record: records.TopicRecord) -> None:
    """The record fits its topic's schema (what the Emitter will do with it)."""
    registry().encode(INTERNAL_SCHEMAS[record.topic], record.value)


# ---------------------------------------------------------------- keys
def test_signals_are_keyed_by_street_code_and_unlocated_ones_by_the_cores_stand_in() -> None:
    assert records.signal_input(SIGNAL).key == "XH07"
    unlocated = Signal(**{**SIGNAL.__dict__, "street_code": None})
    assert records.signal_input(unlocated).key == UNLOCATED == "unlocated"
    # an action routed by its case id reaches the partition of the case's signals
    for signal in (SIGNAL, unlocated):
        case_id = make_case_id(signal)
        assert records.case_inputs_key_of_case(case_id) == records.case_inputs_key(signal)


def test_an_action_input_carries_the_case_id_and_leaves_the_action_alone() -> None:
    action = {"action_id": "A1", "case_id": None, "source_id": "field:R1", "action": "handled"}
    record = records.action_input(action, "XH07-20261120-0a1b2c3d")
    assert action["case_id"] is None
    assert record.key == "XH07" and json.loads(record.value["action"])["case_id"] == "XH07-20261120-0a1b2c3d"
    encodable(record)


def test_tick_and_rejection_records_fit_their_schemas() -> None:
    tick = records.tick_input(123)
    assert tick.key is None and tick.value == {"kind": "tick", "signal": None, "action": None, "tick_ms": 123}
    encodable(tick)
    rejected = records.action_rejected({"action_id": "A1", "source_id": "x"}, 5, "why")
    assert rejected.topic == ACTIONS_REJECTED and rejected.value["case_id"] is None
    encodable(rejected)


# ---------------------------------------------------------------- core outputs -> records
def test_ingest_records_in_order_signals_triage_commands() -> None:
    result = IngestResult(signals=[SIGNAL], triage=[Triage("t1", HOTLINE_CALLS, "why", 1, "{}")],
                          commands=[DeviceCommand("c1", "LIFT-1", 1, "broadcast")], rows={"x": [{"a": 1}]})
    out = records.ingest_records(result)
    assert [(r.topic, r.key) for r in out] == [(CASE_INPUTS, "XH07"), (TRIAGE, HOTLINE_CALLS), (IOT_COMMANDS, "LIFT-1")]
    assert Signal.from_dict(json.loads(out[0].value["signal"])) == SIGNAL
    for record in out:
        encodable(record)


@pytest.fixture(scope="module")
def outputs() -> Outputs:
    """Real engine outputs: a call opens and dispatches a case, a bad action is rejected, the SLA runs out."""
    kb = Knowledge.load()
    valid = registry().from_json("hotline_call", {
        "call_id": "C1", "line": "12345", "received_at": "2026-11-20T09:30:00+08:00", "caller": "13800000000",
        "text": "钦江路15号有6户居室群租，人员很杂，影响居民生活", "address": "钦江路15号"})
    [signal] = Ingestor(kb).ingest("hotline_call", valid, 1_795_138_300_000).signals
    engine = CaseEngine(kb, {}, {}, auto_dispatch=True)
    out = engine.on_signal(signal)
    [case_id] = [row["case_id"] for row in out.cases][:1]
    out.extend(engine.on_action({"action_id": "A1", "ts": "2026-11-20T10:00:00+08:00", "case_id": case_id,
                                 "source_id": None, "actor_kind": "department", "actor_id": "房管办",
                                 "action": "close", "note": None, "photos": None, "extend_minutes": None,
                                 "departments": None}))
    out.extend(engine.on_tick(1_796_500_000_000))
    assert out.case_transitions and out.dispatches and out.sla_alerts and out.rejections and out.cases
    return out


def test_output_records_cover_every_output_but_the_case_rows(outputs: Outputs) -> None:
    out = records.output_records(outputs)
    by_topic: dict[str, list[records.TopicRecord]] = {}
    for record in out:
        by_topic.setdefault(record.topic, []).append(record)
        encodable(record)
        assert record.key == outputs.cases[0]["case_id"]
    assert {t: len(v) for t, v in by_topic.items()} == {
        CASE_EVENTS: len(outputs.case_transitions), DISPATCHES: len(outputs.dispatches),
        SLA_ALERTS: len(outputs.sla_alerts), ACTIONS_REJECTED: len(outputs.rejections)}
    assert [r.topic for r in out] == sorted((r.topic for r in out), key=[CASE_EVENTS, DISPATCHES, SLA_ALERTS,
                                                                        ACTIONS_REJECTED].index)
    event = by_topic[CASE_EVENTS][0].value
    assert json.loads(event["detail"]) == outputs.case_transitions[0]
    assert event["stage"] == outputs.case_transitions[0]["to_stage"]


def test_case_and_delivery_records(outputs: Outputs) -> None:
    row = outputs.cases[-1]
    record = records.case_record(row)
    assert record.key == row["case_id"] and json.loads(record.value["state"]) == row
    encodable(record)
    delivery = records.delivery_record({"case_id": "c1", "x": 1})
    assert (delivery.topic, delivery.key) == (WEBHOOK_DELIVERIES, "c1")


# ---------------------------------------------------------------- records -> rows
def test_rows_of_every_derived_record_equal_the_cores_rows(outputs: Outputs) -> None:
    """Round trip: what the engine returned is what lands in ClickHouse (cleaned of NULLs)."""
    tables = records.table_rows([*records.output_records(outputs), *map(records.case_record, outputs.cases)])
    clean = records.clean_row
    assert tables["cases"] == [clean(r) for r in outputs.cases]
    assert tables["case_transitions"] == [clean(r) for r in outputs.case_transitions]
    assert tables["dispatches"] == [clean(r) for r in outputs.dispatches]  # primary_department included
    assert tables["sla_alerts"] == [clean(r) for r in outputs.sla_alerts]
    assert set(tables) == {"cases", "case_transitions", "dispatches", "sla_alerts"}  # rejections have no table


def test_a_signal_record_becomes_a_signals_row() -> None:
    value = records.signal_input(SIGNAL).value
    table, [row] = records.rows_of(CASE_INPUTS, value, stored_ms=99)
    assert table == "signals" and set(row) == set(records.SIGNAL_COLUMNS) | {"stored_ms"}
    assert row["handled_on_spot"] == 1 and row["stored_ms"] == 99 and row["context"] == ["compound"]
    assert "stored_ms" not in records.rows_of(CASE_INPUTS, value)[1][0]
    assert records.rows_of(CASE_INPUTS, records.tick_input(1).value) == ("", [])


def test_triage_nulls_take_the_column_default_and_rows_pass_through() -> None:
    triage = records.ingest_records(IngestResult(triage=[Triage("t1", HOTLINE_CALLS, "why", 1, "{}")]))[0]
    assert records.rows_of(TRIAGE, triage.value) == ("triage", [
        {"triage_id": "t1", "topic": HOTLINE_CALLS, "reason": "why", "ts_ms": 1, "record": "{}"}])
    stored = records.store_rows_record("sensor_alarms", [{"alarm_id": "a", "street": None, "lat": None, "ok": True}])
    assert stored.key == "sensor_alarms"
    assert records.rows_of(STORE_ROWS, stored.value) == ("sensor_alarms", [{"alarm_id": "a", "lat": None, "ok": 1}])


def test_dead_letters_keep_text_and_base64_what_is_not() -> None:
    value = records.dead_letter_value(HOTLINE_CALLS, 2, 7, "why", 5, "群租".encode(), None)
    assert records.rows_of(dlq(HOTLINE_CALLS), value) == ("dead_letters", [
        {"topic": HOTLINE_CALLS, "partition": 2, "offset": 7, "reason": "why", "ts_ms": 5, "original": "群租",
         "key": ""}])
    binary = records.dead_letter_value(IOT_READINGS, 0, 0, "why", 5, b"\xff\x00", b"\xfe")
    [row] = records.rows_of(dlq(IOT_READINGS), binary)[1]
    assert row["original"] == "base64:/wA=" and row["key"] == "base64:/g=="
    registry().encode("dead_letter", binary)


def test_a_topic_without_a_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="no table for topic iot.commands"):
        records.rows_of(IOT_COMMANDS, {})
    assert records.table_rows([records.TopicRecord(IOT_COMMANDS, {})]) == {}


def test_the_sink_reads_every_topic_with_a_table_and_they_exist() -> None:
    assert set(records.SINK_TOPICS) <= set(all_topics())
    assert set(records.DEAD_LETTER_TOPICS) == {dlq(t) for t in RAW_SCHEMAS} | {dlq(CASE_INPUTS)}


def _migrated_columns() -> dict[str, set[str]]:
    """Columns per table from the migration SQL (CREATE TABLE bodies and ADD COLUMN)."""
    columns: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "streams" / "storage" / "migrations").glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\) ENGINE", sql, re.S):
            columns[table] = {line.split()[0] for line in io.StringIO(body) if line.strip()}
        for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (?:IF NOT EXISTS )?(\w+)", sql):
            columns[table].add(column)
    return columns


def test_every_row_the_mapping_makes_fits_its_table(outputs: Outputs) -> None:
    columns = _migrated_columns()
    recs = [*records.output_records(outputs), *map(records.case_record, outputs.cases),
            *records.ingest_records(IngestResult(signals=[SIGNAL], triage=[Triage("t", HOTLINE_CALLS, "r", 1, "{}")])),
            records.TopicRecord(dlq(HOTLINE_CALLS), records.dead_letter_value(HOTLINE_CALLS, 0, 0, "r", 1, b"x", None))]
    tables = records.table_rows(recs, stored_ms=1)
    assert set(tables) == {"cases", "case_transitions", "dispatches", "sla_alerts", "signals", "triage", "dead_letters"}
    for table, rows in tables.items():
        for row in rows:
            assert set(row) <= columns[table], (table, set(row) - columns[table])


# ---------------------------------------------------------------- properties
optional_text = st.one_of(st.none(), st.text(max_size=12))
signals = st.builds(
    Signal, signal_id=st.text(min_size=1, max_size=12), source=st.sampled_from(["hotline", "field", "iot"]),
    source_kind=st.text(max_size=8), source_id=st.text(max_size=12), ts_ms=st.integers(0, 2**53),
    ingest_ms=st.integers(0, 2**53), category_code=st.text(max_size=6), category_name=st.text(max_size=6),
    confidence=st.floats(0, 1), context=st.lists(st.text(max_size=6), max_size=3),
    lat=st.one_of(st.none(), st.floats(-90, 90)), lon=st.one_of(st.none(), st.floats(-180, 180)),
    cell=optional_text, community=optional_text, street=optional_text,
    street_code=st.one_of(st.none(), st.text(alphabet="ABCDEFGHXZ0123456789", min_size=1, max_size=6)),
    district=optional_text, address=optional_text, reporter_id=optional_text, reporter_kind=optional_text,
    handled_on_spot=st.one_of(st.none(), st.booleans()))


@settings(max_examples=100, deadline=None)
@given(signal=signals)
def test_any_signal_round_trips_to_its_columns(signal: Signal) -> None:
    record = records.signal_input(signal)
    encodable(record)
    assert record.key == (signal.street_code or UNLOCATED)
    table, [row] = records.rows_of(record.topic, record.value)
    assert table == "signals"
    expected = records.clean_row({k: getattr(signal, k) for k in records.SIGNAL_COLUMNS})
    assert row == expected
    assert set(records.SIGNAL_COLUMNS) <= {f.name for f in fields(Signal)}


# ---------------------------------------------------------------- the worker and replay write the same rows
class RecordingStore:
    """Anything with insert(table, rows) is a replay store; this one keeps the rows."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.tables.setdefault(table, []).extend(rows)


async def test_the_live_path_and_replay_write_the_same_rows() -> None:
    from prometheus_client import CollectorRegistry

    from streams.agents.ingest import IngestAdapter
    from streams.agents.lifecycle import LifecycleAdapter
    from streams.bus.codec import iso_to_ms
    from streams.bus.topics import TopicNames
    from streams.metrics import PipelineMetrics
    from streams.replay import replay
    from streams.settings import Settings
    from streams.testing import TestingSource, run

    received = "2026-11-20T09:30:00+08:00"
    calls = [{"call_id": f"C{i}", "line": "12345", "received_at": received, "caller": f"1380000000{i}",
              "text": text, "address": address}
             for i, (text, address) in enumerate([("钦江路15号有6户居室群租，人员很杂", "钦江路15号"),
                                                   ("钦江路15号群租，住了十几个人", "钦江路15号"),
                                                   ("你好，我想问一下今天天气怎么样", "钦江路15号"),
                                                   ("江南新村小区里有人私装地锁", "江南新村")])]
    settings_ = Settings(pii_key="the-same-pseudonym-key-live-and-replay")   # one key: the same pseudonyms
    kb = Knowledge.load(settings_.kb_path, settings_.city_dir)

    # live: the ingest and lifecycle adapters, then what the ClickHouse sink makes of their records
    metrics, names = PipelineMetrics(CollectorRegistry()), TopicNames("")
    from streams.security import pseudonymizer

    ingest = IngestAdapter(Ingestor(kb, settings_.triage_confidence, pseudonyms=pseudonymizer(settings_)),
                           registry(), metrics, names)
    ingested = await run(ingest.handle, TestingSource([(HOTLINE_CALLS, None, c) for c in calls],
                                                      encoding="json", timestamp_ms=iso_to_ms(received)))
    engine = CaseEngine(kb, {}, {}, auto_dispatch=settings_.auto_dispatch)
    lifecycle = LifecycleAdapter(engine, registry(), metrics, names)
    decided = await run(lifecycle.handle, TestingSource([(CASE_INPUTS, p.key, p.value)
                                                         for p in ingested.produced(CASE_INPUTS)]))
    live = {**ingested.table_rows(), **decided.table_rows()}

    # replay: the same calls from a file
    store = RecordingStore()
    lines = [json.dumps({"topic": HOTLINE_CALLS, "value": c}, ensure_ascii=False) for c in calls]
    replay(lines, settings_, store, knowledge=kb, err=io.StringIO())

    def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # what FINAL reads of a ReplacingMergeTree
        last = {row["case_id"]: row for row in sorted(rows, key=lambda r: r["version"])}
        return sorted(last.values(), key=lambda r: r["case_id"])

    assert set(live) == set(store.tables) == {"signals", "triage", "cases", "case_transitions", "dispatches"}
    assert latest(live["cases"]) == latest(store.tables["cases"])
    for table in ("signals", "triage", "case_transitions", "dispatches"):
        assert live[table] == store.tables[table], table
