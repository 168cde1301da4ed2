"""Fault injection: poison records of every class, interleaved with good ones, through the real worker
on real Kafka. The worker stays up, every good record is processed, every poison record is exactly one
dead-letter row with its reason, and `streams reconcile` accounts for every input."""
from __future__ import annotations

import json
import time

import pytest

from streams.local.kafka import LocalKafka
from streams.settings import Settings
from streams.sinks.reconcile import reconcile
from streams.storage import open_store
from tests.e2e.faults import call, now_iso, poison_catalogue, produce_records
from tests.e2e.helpers import query, wait_reconciled, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
MAX_MESSAGE = 30_000  # small, so that a valid call with a long text makes a signal too large to send


def good_records() -> list[tuple[str, dict]]:
    records: list[tuple[str, dict]] = [("hotline.calls", call(i)) for i in range(24)]
    records += [("field.tracks", {"inspector_id": f"INS-{i:03d}", "ts": now_iso(), "lat": 31.19 + i / 1000,
                                  "lon": 121.43}) for i in range(12)]
    records += [("iot.readings", {"device_id": "HB-WK-V01", "ts": now_iso(), "metric": "vibration_mm_s",
                                  "value": 1.0 + i / 10}) for i in range(8)]          # normal: filtered
    records += [("iot.readings", {"device_id": "HB-SQL-V01", "ts": now_iso(), "metric": "tilt_permille",
                                  "value": 9.0})]                                    # above its threshold
    records += [("camera.alerts", {"alert_id": f"CA-{i}", "camera_id": f"CAM-XH-{i + 11:03d}", "ts": now_iso(),
                                   "type": "exposed_garbage", "confidence": 0.9}) for i in range(4)]
    records += [("registry.changes", {"change_id": "RG-1", "ts": now_iso(), "address": "淮海中路1850号",
                                      "kind": "housing_contract"})]
    records += [("field.reports", {"report_id": f"FR-{i}", "reporter_id": "INS-007", "reporter_kind": "inspector",
                                   "reported_at": now_iso(), "category": "暴露垃圾",
                                   "address": ["宜山路455号", "零陵路120号", "天钥桥路300号", "田林路300号"][i]})
                for i in range(4)]
    return records


def test_poison_records_of_every_class_each_become_one_dead_letter(kafka: LocalKafka, topic_prefix: str,
                                                                    worker_factory, store_url_factory) -> None:
    store_url = store_url_factory("server")  # read while the worker runs
    poison = poison_catalogue(MAX_MESSAGE)
    good = good_records()
    # interleave: a poison record after every second good one (and the rest at the end)
    stream: list[tuple[str, bytes | None, bool]] = []
    queue = list(poison)
    for i, (topic, value) in enumerate(good):
        stream.append((topic, json.dumps(value, ensure_ascii=False).encode(), True))
        if i % 2 and queue:
            p = queue.pop(0)
            stream.append((p.topic, p.value, False))
    stream += [(p.topic, p.value, False) for p in queue]
    since = int(time.time() * 1000) - 1000
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix)
    worker = worker_factory(store_url, kafka_max_message_bytes=str(MAX_MESSAGE))
    worker.wait_healthy()
    positions = produce_records(kafka.bootstrap, topic_prefix, [(t, v) for t, v, _ in stream])
    good_at = [pos for pos, (_, _, ok) in zip(positions, stream, strict=True) if ok]
    poison_at = dict(zip([pos for pos, (_, _, ok) in zip(positions, stream, strict=True) if not ok],
                         [p for p in poison[:len(poison) - len(queue)] + queue], strict=True))
    # actions on some of the good calls, once their cases exist
    wait_until(lambda: _n(store_url, "SELECT count() AS n FROM signals FINAL WHERE source_id LIKE 'G-%'") >= 24,
               180, "the good calls' signals", worker.tail)
    actions = [("case.actions", json.dumps({"action_id": f"A-{i}", "ts": now_iso(), "source_id": f"G-{i}",
                                            "actor_kind": "department", "actor_id": "城管执法中队",
                                            "action": "handled", "note": "已整改"}, ensure_ascii=False).encode())
               for i in range(4)]
    good_at += produce_records(kafka.bootstrap, topic_prefix, actions)
    until = int(time.time() * 1000) + 1000
    everything = len(good_at) + len(poison_at)

    def settled() -> bool:
        return _n(store_url, "SELECT count() AS n FROM input_ledger FINAL WHERE topic != 'case.inputs' "
                             "OR outcome = 'dlq'") >= everything
    def explain() -> str:
        store = open_store(store_url)
        try:
            return reconcile(settings, store, since, until).text() + "\n" + worker.tail()
        finally:
            store.close()

    wait_until(settled, 120, f"{everything} inputs in the ledger", explain)
    assert worker.proc is not None and worker.proc.poll() is None, f"the worker exited:\n{worker.tail()}"

    # each poison record: exactly one dead-letter row at its position, with its reason. The dead letters reach
    # ClickHouse through their own .dlq topics, so the sink may write them a little after the ledger rows.
    def dead_letters() -> list[dict]:
        return query(store_url, "SELECT topic, partition, offset, reason FROM dead_letters FINAL")

    def missing() -> str:
        written = {(d["topic"], d["partition"], d["offset"]) for d in dead_letters()}
        return "\n".join(f"no dead letter yet for {p.name} at {pos}" for pos, p in poison_at.items()
                         if ((p.dead_topic or p.topic), pos[1], pos[2]) not in written)

    wait_until(lambda: len(dead_letters()) >= len(poison_at), 120, f"{len(poison_at)} dead-letter rows", missing)
    dead = dead_letters()
    by_position = {(d["topic"], d["partition"], d["offset"]): d["reason"] for d in dead}
    assert len(dead) == len(by_position) == len(poison_at), missing() or sorted(by_position)
    for position, p in poison_at.items():
        topic = p.dead_topic or p.topic
        reason = by_position.get((topic, position[1], position[2]))
        assert reason is not None, f"{p.name}: no dead letter at {position}"
        assert p.reason in reason, f"{p.name}: {reason!r}"
    raw = query(store_url, "SELECT topic, partition, offset, count() AS n FROM dead_letters "
                           "GROUP BY topic, partition, offset HAVING n > 1")
    assert not raw, f"dead letters written twice: {raw}\n{worker.tail(300)}"

    # every good record processed: a ledger row that is not a dead letter
    ledger = {(r["topic"], r["partition"], r["offset"]): r["outcome"]
              for r in query(store_url, "SELECT topic, partition, offset, outcome FROM input_ledger FINAL")}
    for position in good_at:
        assert ledger.get(position) not in (None, "dlq"), f"good record {position}: {ledger.get(position)}"
    for position in poison_at:
        assert ledger.get(position) == "dlq", position
    signals = {r["source_id"] for r in query(store_url, "SELECT source_id FROM signals FINAL")}
    assert {f"G-{i}" for i in range(24)} <= signals
    assert {f"CA-{i}" for i in range(4)} <= signals and {f"FR-{i}" for i in range(4)} <= signals
    assert _n(store_url, "SELECT count() AS n FROM inspector_tracks FINAL") == 12

    report = wait_reconciled(settings, store_url, since, until, 120, "every input accounted for", worker.tail,
                             inputs_only=True, retry_errors=False)
    print(report.text())
    assert worker.stop() == 0, worker.tail()


def _n(store_url: str, sql: str) -> int:
    try:
        return int(query(store_url, sql)[0]["n"])
    except Exception:
        return -1
