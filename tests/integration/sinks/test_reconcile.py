"""`streams reconcile` on a real broker and a real ClickHouse: it counts the Kafka records of a time
range per partition, finds the ones without a ledger row, and names each output difference."""
from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from streams.bus.topics import TopicNames
from streams.local.kafka import LocalKafka
from streams.settings import Settings
from streams.sinks.reconcile import _ranges_of, check_outputs, reconcile
from streams.storage.store import Store

pytestmark = [pytest.mark.kafka]


def test_gaps_are_ranges() -> None:
    assert _ranges_of([], 5, 8) == [(5, 7)]
    assert _ranges_of([5, 6, 7], 5, 8) == []
    assert _ranges_of([6, 9], 5, 12) == [(5, 5), (7, 8), (10, 11)]


def case(case_id: str, **over: object) -> dict:
    row = {"case_id": case_id, "version": 3, "updated_ms": 2000, "opened_ms": 1500, "status": "handle",
           "light": "green", "deadline_ms": 9000, "urge_count": 0, "dispatched_by": "street", "quick_handled": 0,
           "sources": [f"12345:{case_id}"]}
    row.update(over)
    return row


def test_reconcile_counts_inputs_and_names_output_differences(kafka: LocalKafka, topic_prefix: str,
                                                              chdb_store: Store) -> None:
    names = TopicNames(topic_prefix)
    kafka.create_topics([names.name("hotline.calls"), names.name("iot.readings")], partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    before = int(time.time() * 1000) - 1
    for i in range(10):
        producer.send(names.name("hotline.calls"), b"{}", partition=i % 2)
    for _ in range(3):
        producer.send(names.name("iot.readings"), b"{}", partition=0)
    producer.flush()
    producer.close()
    after = int(time.time() * 1000) + 1
    # the ledger: hotline partition 0 complete (5 records), partition 1 misses offsets 2-3 and has a replay
    ledger = [{"topic": "hotline.calls", "partition": 0, "offset": o, "ts_ms": before, "outcome": "case.inputs",
               "outputs": 1} for o in range(5)]
    ledger += [{"topic": "hotline.calls", "partition": 1, "offset": o, "ts_ms": before, "outcome": "dlq",
                "outputs": 1} for o in (0, 1, 4)]
    ledger += [{"topic": "iot.readings", "partition": 0, "offset": o, "ts_ms": before, "outcome": "none",
                "outputs": 0} for o in range(3)]
    chdb_store.insert("input_ledger", ledger)
    chdb_store.insert("input_ledger", ledger[-1:])  # a replayed record: written twice, counted once
    chdb_store.insert("dead_letters", [{"topic": "hotline.calls", "partition": 1, "offset": o, "reason": "r",
                                        "ts_ms": before, "original": "{}", "key": ""} for o in (0, 1)])
    # outputs: c1 is whole; c2 lost its dispatch row and its red alert; c3 has a doubled yellow
    chdb_store.insert("cases", [case("c1"), case("c2", light="red", urge_count=1),
                                case("c3", light="yellow", deadline_ms=7000), case("old", opened_ms=10)])
    chdb_store.insert("case_transitions", [
        {"event_id": "t1", "case_id": "c1", "ts_ms": 1600, "action": "dispatch", "actor_id": "system"},
        {"event_id": "t2", "case_id": "c2", "ts_ms": 1600, "action": "dispatch", "actor_id": "system"},
        {"event_id": "t3", "case_id": "c2", "ts_ms": 9001, "action": "urge", "actor_id": "sla"},
        {"event_id": "t4", "case_id": "c3", "ts_ms": 1600, "action": "dispatch", "actor_id": "system"},
    ])
    chdb_store.insert("dispatches", [{"dispatch_id": "t1", "case_id": "c1"}, {"dispatch_id": "t4", "case_id": "c3"}])
    chdb_store.insert("sla_alerts", [
        {"alert_id": "y2", "case_id": "c2", "ts_ms": 8000, "stage": "handle", "kind": "sla_yellow",
         "deadline_ms": 9000},
        {"alert_id": "y3", "case_id": "c3", "ts_ms": 6000, "stage": "handle", "kind": "sla_yellow",
         "deadline_ms": 7000},
        {"alert_id": "y3-again", "case_id": "c3", "ts_ms": 6000, "stage": "handle", "kind": "sla_yellow",
         "deadline_ms": 7000},
    ])

    result = reconcile(Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix), chdb_store, before, after,
                       topics=["hotline.calls", "iot.readings"])
    # the outputs are checked for cases opened in the range of their event time; here 1000..5000
    by_topic = {t.topic: t for t in result.inputs}
    hotline, iot = by_topic["hotline.calls"], by_topic["iot.readings"]
    assert (hotline.kafka, hotline.accounted, hotline.unaccounted) == (10, 8, 2)
    assert hotline.missing == ["partition 1: offsets 2-3 (2)"]
    assert hotline.outcomes == {"case.inputs": 5, "dlq": 3} and hotline.dead_letter_rows == 2
    assert not hotline.ok
    assert (iot.kafka, iot.accounted, iot.replays_absorbed, iot.ok) == (3, 3, 1, True)

    cases, outputs = check_outputs(chdb_store, 1000, 5000)
    assert cases == 3
    found = {f.check: f for f in outputs}
    assert found["dispatch transitions ↔ dispatch rows"].differences == [
        "dispatch step without its dispatch row: t2 (case c2)"]
    assert found["dispatched cases (state) ↔ a dispatch each"].differences == [
        "case c2 was dispatched (state) but has no dispatch row"]
    assert found["fired red timers (urge steps) ↔ sla_red alerts"].differences == [
        "red timer fired without its alert: ('c2', 9001) (1 vs 0)"]
    assert found["urges counted in the case state ↔ urge steps"].ok
    assert found["open cases' yellow/red lights ↔ their alerts"].differences == [
        "case c2 shows red but has no sla_red alert for its deadline 9000"]
    assert found["SLA alerts not doubled"].differences == ["sla_yellow for case c3 stage handle at 6000: 2 alerts"]
    assert found["each report in exactly one case"].ok
    assert "MISSING partition 1: offsets 2-3" in result.text() and not result.ok
