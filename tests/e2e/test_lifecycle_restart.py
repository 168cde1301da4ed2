"""The lifecycle on real Kafka: signals and actions drive cases; SLA timers fire from the live clock;
a worker killed mid-stream and restarted loses no case and fires no timer twice."""
from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.bus.codec import registry
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import consume_all, produce, query, wait_rows, wait_settled

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]
CITY = timezone(timedelta(hours=8))
STREETS = ["斜土路", "天平路", "漕溪北路", "肇嘉浜路", "虹梅路", "宜山路", "衡山路", "田林路"]


def iso(dt: datetime) -> str:
    return dt.astimezone(CITY).isoformat(timespec="seconds")


def old_call(i: int, when: datetime) -> dict:
    """Distinct places so that no two calls merge: each opens its own case."""
    road = STREETS[i % len(STREETS)]
    return {"call_id": f"OLD-{i}", "line": "12345", "received_at": iso(when),
            "caller": f"1380000{i:04d}", "text": f"{road}{100 + i * 40}号楼下饭店油烟直排，家里窗户都不敢开",
            "address": f"{road}{100 + i * 40}号"}


def test_kill_and_restart_loses_no_case_and_fires_no_timer_twice(
        kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory) -> None:
    store_url = store_url_factory("chdb")
    month_ago = datetime.now(UTC) - timedelta(days=20)  # inside the 30-day event-time window
    # 1. calls from weeks ago: dispatched at once, and their 处置 limit (3 working days) long gone
    first = [old_call(i, month_ago + timedelta(minutes=i)) for i in range(8)]
    produce(kafka.bootstrap, topic_prefix, [("hotline.calls", c) for c in first])
    worker = worker_factory(store_url)
    # each case: dispatch, then yellow + red (+ 催办) on the handle stage as soon as the timers tick
    wait_rows(worker, signals=8, cases=8, dispatches=8, sla_alerts=8 * 3)

    # 2. more input while the worker is killed mid-stream
    worker.kill()
    now = datetime.now(UTC)
    second = [old_call(100 + i, now) for i in range(8)]
    actions = [{"action_id": f"A-{i}", "ts": iso(now), "source_id": f"OLD-{i}", "actor_kind": "department",
                "actor_id": "城管执法中队", "action": "handled", "note": "已整改"} for i in range(4)]
    actions.append({"action_id": "A-BAD", "ts": iso(now), "source_id": "OLD-5", "actor_kind": "department",
                    "actor_id": "城管执法中队", "action": "close"})  # no close before 核查: rejected
    produce(kafka.bootstrap, topic_prefix,
            [("hotline.calls", c) for c in second] + [("case.actions", a) for a in actions])

    # 3. restart on the same state (changelog-backed tables) and let it finish
    restarted = worker_factory(store_url)
    # (a restarted Faust worker may wait up to the request timeout in recovery before it resumes)
    wait_rows(restarted, timeout=240, signals=8, cases=8 + 4, case_transitions=4)
    # the restarted sink first re-writes what the killed one had not committed: wait for every group to catch up
    wait_settled(kafka.bootstrap, f"citygrid-{topic_prefix}")
    assert restarted.stop() == 0, restarted.tail()

    cases = query(store_url, "SELECT case_id, status, light, reporters, urge_count FROM cases FINAL")
    assert len(cases) == 16, "every call opened exactly one case, none lost across the kill"
    statuses = collections.Counter(r["status"] for r in cases)
    assert statuses["verify"] == 4, statuses    # the handled ones wait for 核查
    assert statuses["handle"] == 12, statuses

    # timers fired exactly once per case and stage, although ticks ran before and after the kill
    codec = registry()
    alerts = [codec.decode(m.value)[1] for m in consume_all(kafka.bootstrap, f"{topic_prefix}.sla.alerts", 24 + 8)]
    fired = collections.Counter((a["case_id"], a["stage"], a["kind"]) for a in alerts)
    assert fired, "no SLA alert reached the topic"
    assert max(fired.values()) == 1, [k for k, n in fired.items() if n > 1]
    kinds = collections.Counter(kind for (_, stage, kind) in fired if stage == "handle")
    assert kinds["sla_yellow"] >= 8 and kinds["sla_red"] >= 8, kinds

    rejected = consume_all(kafka.bootstrap, f"{topic_prefix}.case.actions.rejected", 1)
    reasons = [codec.decode(m.value)[1]["reason"] for m in rejected]
    assert reasons and all(r for r in reasons), reasons
