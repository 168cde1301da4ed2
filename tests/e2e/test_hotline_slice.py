"""The first slice end to end on real Kafka: hotline.calls → validate → classify → 立案 → 派遣 →
signal, case and dispatch rows in ClickHouse (both engines); bad records → <topic>.dlq and dead_letters."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.bus.codec import registry
from streams.bus.sealing import DeadLetterSealer
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import consume_all, produce, query, wait_rows
from tests.fixtures.worker import TEST_SECRETS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CALLS = [
    ("C-QZ-1", "钦江路15号有6户居室群租，人员很杂，影响居民生活", "钦江路15号", "群租", ["房管办"], 3),
    ("C-YY-1", "斜土路楼下饭店油烟直排，家里窗户都不敢开", "斜土路1200号", "餐饮油烟", ["城管执法中队"], 3),
    ("C-DS-1", "江南新村小区里有人私装地锁，老人被绊倒了", "江南新村", "私装地锁", ["居民区工作站"], 4),
]


# a few days ago: inside the event-time window (streams.bus.rules), whatever day the suite runs
RECEIVED = (datetime.now(UTC) - timedelta(days=4)).replace(hour=1, minute=30).isoformat(timespec="seconds")
RECEIVED_EVENING = (datetime.now(UTC) - timedelta(days=4)).replace(hour=13, minute=5).isoformat(
    timespec="seconds")


def call(call_id: str, text: str, address: str) -> dict:
    return {"call_id": call_id, "line": "12345", "received_at": RECEIVED,
            "caller": "13800000000", "text": text, "address": address}


@pytest.mark.parametrize("case_path", ["lean", "faust"])
def test_hotline_calls_become_dispatched_cases(kafka: LocalKafka, topic_prefix: str, worker_factory,
                                               store_url: str, case_path: str) -> None:
    """Both implementations of the case path (docs/ARCHITECTURE.md): the lean one (default) on both stores,
    the Faust agents on the embedded one."""
    if case_path == "faust" and not store_url.startswith("chdb://"):
        pytest.skip("the Faust case path runs on the embedded store only (one run keeps it working)")
    avro_call = registry().encode("hotline_call", {
        "call_id": "C-LD-1", "line": "12319", "received_at": RECEIVED_EVENING, "caller": "13900000000",
        "text": "天平路的路灯坏了好几天，晚上黑漆漆的", "address": "天平路100号", "lat": None, "lon": None,
        "channel": None})
    records = [("hotline.calls", call(cid, text, addr)) for cid, text, addr, *_ in CALLS]
    records += [
        ("hotline.calls", avro_call),                                              # Avro single-object
        ("hotline.calls", {"call_id": "C-BAD-1", "line": "12345", "text": "缺字段"}),  # fails its schema
        ("hotline.calls", b"\x00\xffnot a record"),                                  # garbage bytes
        ("hotline.calls", call("C-QZ-1", CALLS[0][1], CALLS[0][2])),                 # re-delivered call
    ]
    produce(kafka.bootstrap, topic_prefix, records)

    worker = worker_factory(store_url, case_path=case_path)
    wait_rows(worker, signals=4, cases=4, dispatches=4, dead_letters=2)
    assert worker.stop() == 0, worker.tail()

    signals = query(store_url, "SELECT source_id, category_name, street FROM signals FINAL ORDER BY source_id")
    assert [(r["source_id"], r["category_name"]) for r in signals] == sorted(
        [(c[0], c[3]) for c in CALLS] + [("C-LD-1", "路灯损坏")])

    cases = query(store_url, "SELECT case_id, category_name, departments, level, status, origin, reporters "
                             "FROM cases FINAL ORDER BY category_name")
    by_category = {r["category_name"]: r for r in cases}
    assert len(cases) == 4, cases  # the re-delivered call opened nothing new
    for _, _, _, name, departments, level in CALLS:
        assert by_category[name]["departments"] == departments
        assert by_category[name]["level"] == level
        assert by_category[name]["status"] == "handle"  # 立案 and 派遣 done, waiting for 处置
        assert by_category[name]["reporters"] == 1
    assert by_category["路灯损坏"]["origin"] == "12319"

    dispatches = query(store_url, "SELECT case_id, primary_department, kb_version FROM dispatches FINAL")
    assert sorted(r["primary_department"] for r in dispatches) == sorted(
        ["房管办", "城管执法中队", "居民区工作站", "路灯管理所"])
    assert all(r["kb_version"] for r in dispatches)

    transitions = query(store_url, "SELECT case_id, to_stage FROM case_transitions FINAL")
    stages = {(r["case_id"], r["to_stage"]) for r in transitions}
    for case in cases:
        assert {(case["case_id"], "register"), (case["case_id"], "handle")} <= stages

    dead = query(store_url, "SELECT topic, reason, original FROM dead_letters FINAL ORDER BY reason")
    assert len(dead) == 2
    assert all(r["topic"] == "hotline.calls" for r in dead)
    assert any("missing required field" in r["reason"] for r in dead), dead
    # the DLQ topic keeps the original bytes, sealed with the dead-letter key, and the reason
    dlq = consume_all(kafka.bootstrap, f"{topic_prefix}.hotline.calls.dlq", expect=2)
    decoded = [registry().decode(m.value)[1] for m in dlq]
    sealer = DeadLetterSealer.from_setting(TEST_SECRETS["CITYGRID_DLQ_KEY"])
    assert {sealer.open(d["original"]) for d in decoded} >= {b"\x00\xffnot a record"}
    assert all(sealer.open(r["original"].encode()) for r in dead), "ClickHouse holds them sealed too"
