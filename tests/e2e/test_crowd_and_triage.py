"""The ways out end to end on real Kafka with the real worker: the centre turns a triage record 人工分拨 into a
dispatched case (from_triage; once however often the action comes; only the centre may), and a crowd case follows
its area's response plan 三级响应预案 up at once and down with hysteresis or by the centre's step_down, each change
a case transition and a signed response_level webhook to the departments of that level."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.bus.codec import registry
from streams.core.times import CITY_TZ
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import WebhookReceiver, consume_all, produce_keyed, query, wait_until
from tests.fixtures.worker import WorkerProcess

# clickhouse-server: the test watches the tables while the worker writes them (chdb locks its path)
pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]

SECRET = "e2e-crowd-webhook-secret-0001"
PLAN_DEPARTMENTS = ("公安派出所", "城管执法中队", "街道网格中心", "区网格中心")   # those of 徐家汇商圈's plan levels
LEVEL_DEPARTMENTS = {3: ["公安派出所"], 2: ["公安派出所", "城管执法中队", "街道网格中心"],
                     1: ["公安派出所", "城管执法中队", "区网格中心"]}
PLAN_ACTIONS = ("response_level", "step_down", "stand_down")



def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def action(action_id: str, name: str, at: datetime, actor_kind: str = "center", **fields: Any) -> dict[str, Any]:
    return {"action_id": action_id, "ts": iso(at), "case_id": None, "source_id": None, "actor_kind": actor_kind,
            "actor_id": "区网格中心" if actor_kind == "center" else "城管执法中队", "action": name, **fields}


def test_from_triage_makes_one_dispatched_case_and_only_the_centre_may(
        kafka: LocalKafka, topic_prefix: str, worker_factory: Callable[..., WorkerProcess],
        store_url_factory: Callable[[str], str]) -> None:
    store_url = store_url_factory("server")
    received = datetime.now(CITY_TZ).replace(microsecond=0) - timedelta(hours=1)
    calls = [  # 南京东路 is not in 徐汇区: no place; the second says nothing the classifier can place
        {"call_id": "C-TR-PLACE", "line": "12345", "received_at": iso(received), "caller": "13800000000",
         "text": "我家楼下的饭店油烟直排，熏得窗户都不敢开", "address": "南京东路1号"},
        {"call_id": "C-TR-WHAT", "line": "12345", "received_at": iso(received), "caller": "13900000000",
         "text": "你们快派人来看看吧，真的受不了了", "address": "钦江路15号"},
    ]
    produce_keyed(kafka.bootstrap, topic_prefix, [("hotline.calls", c["call_id"], c) for c in calls])
    worker = worker_factory(store_url)
    worker.wait_healthy()

    def triage() -> dict[str, dict[str, Any]]:
        rows = query(store_url, "SELECT triage_id, topic, reason, record, best_category FROM triage FINAL")
        return {json.loads(r["record"])["call_id"]: r for r in rows}

    wait_until(lambda: len(triage()) == 2, 180, "both calls in manual triage", worker.tail)
    rows = triage()
    assert "unknown location" in rows["C-TR-PLACE"]["reason"]
    assert "low classification confidence" in rows["C-TR-WHAT"]["reason"]
    assert query(store_url, "SELECT count() AS n FROM cases FINAL")[0]["n"] == 0

    at = received + timedelta(minutes=20)
    place = action("TR-PLACE-1", "from_triage", at, triage_id=rows["C-TR-PLACE"]["triage_id"], address="斜土路1200号")
    what = action("TR-WHAT-1", "from_triage", at, triage_id=rows["C-TR-WHAT"]["triage_id"], category="路灯损坏")
    not_centre = action("TR-DEPT-1", "from_triage", at, actor_kind="department",
                        triage_id=rows["C-TR-WHAT"]["triage_id"], category="路灯损坏")
    # the same action re-sent, and a second action of the centre on the same record: the same signal
    again = action("TR-PLACE-2", "from_triage", at + timedelta(minutes=1), triage_id=rows["C-TR-PLACE"]["triage_id"],
                   address="斜土路1200号")
    # one key: the actions keep their order (the centre's sentinel below comes after all of them)
    produce_keyed(kafka.bootstrap, topic_prefix, [("case.actions", "centre", a)
                                                  for a in (place, what, not_centre, place, again)])

    def cases() -> list[dict[str, Any]]:
        return query(store_url, "SELECT case_id, category_name, street, address, departments, status, sources, "
                                "reporters FROM cases FINAL ORDER BY category_name")

    wait_until(lambda: len(cases()) == 2 and all(c["status"] == "handle" for c in cases()), 180,
               "two dispatched cases from triage", lambda: f"{cases()}\n{worker.tail()}")
    rejected = consume_all(kafka.bootstrap, f"{topic_prefix}.case.actions.rejected", expect=1, timeout=60)
    [rejection] = [registry().decode(m.value)[1] for m in rejected]
    assert rejection["action_id"] == "TR-DEPT-1" and "only the centre" in rejection["reason"], rejection

    # a sentinel behind the re-sent actions, on the same partitions: once its 催办 is written, the repeats have
    # been through the router and the case engine as well
    oil_case = next(c["case_id"] for c in cases() if c["category_name"] == "餐饮油烟")
    produce_keyed(kafka.bootstrap, topic_prefix, [("case.actions", "centre", action(
        "URGE-1", "urge", at + timedelta(minutes=2), case_id=oil_case))])

    def urged() -> bool:
        return bool(query(store_url, "SELECT count() AS n FROM case_transitions FINAL WHERE action = 'urge' "
                                     f"AND case_id = '{oil_case}'")[0]["n"])

    wait_until(urged, 120, "the sentinel's urge", worker.tail)

    def dispatches() -> list[dict[str, Any]]:
        return query(store_url, "SELECT case_id, primary_department FROM dispatches FINAL")

    wait_until(lambda: len(dispatches()) >= 2, 120, "the dispatches", worker.tail)
    by_category = {c["category_name"]: c for c in cases()}
    assert set(by_category) == {"餐饮油烟", "路灯损坏"}   # the classifier's best guess kept; the centre's category
    oil, light = by_category["餐饮油烟"], by_category["路灯损坏"]
    assert oil["street"] == "斜土街道" and oil["departments"] == ["城管执法中队"]   # placed by the centre's address
    assert light["departments"] == ["路灯管理所"]
    assert oil["sources"] == ["12345:C-TR-PLACE"] and light["sources"] == ["12345:C-TR-WHAT"]
    assert sorted((d["case_id"], d["primary_department"]) for d in dispatches()) == sorted(
        [(oil["case_id"], "城管执法中队"), (light["case_id"], "路灯管理所")])
    assert oil["reporters"] == 1 and light["reporters"] == 1
    # the repeats changed nothing: no merge into the case, no second discovery
    steps = query(store_url, "SELECT case_id, action FROM case_transitions FINAL WHERE action IN ('merge', 'discover')")
    assert sorted((r["case_id"], r["action"]) for r in steps) == sorted(
        [(oil["case_id"], "discover"), (light["case_id"], "discover")])
    assert worker.stop() == 0, worker.tail()


def test_crowd_plan_rises_at_once_steps_down_with_hysteresis_and_by_the_centre(
        kafka: LocalKafka, topic_prefix: str, worker_factory: Callable[..., WorkerProcess],
        store_url_factory: Callable[[str], str], tmp_path: Path) -> None:
    store_url = store_url_factory("server")
    # 徐家汇商圈: levels at 800 / 1500 / 3000 people; down once below 0.8 x the level's count for 10 minutes
    t0 = datetime.now(CITY_TZ).replace(microsecond=0) - timedelta(minutes=50)
    seq = iter(range(1000))

    def count(camera: str, minute: int, people: int) -> tuple[str, str, dict[str, Any]]:
        return ("camera.alerts", "徐家汇商圈", {
            "alert_id": f"CROWD-{next(seq)}", "camera_id": camera, "ts": iso(t0 + timedelta(minutes=minute)),
            "type": "crowd_count", "confidence": 0.9, "count": people, "snapshot": None})

    with WebhookReceiver(SECRET) as receiver:
        hooks = tmp_path / "webhooks.yaml"
        hooks.write_text(yaml.safe_dump({
            "links_base_url": "https://grid.example.test", "backoff_initial_seconds": 0.1,
            "endpoints": {d: {"url": receiver.url(str(PLAN_DEPARTMENTS.index(d))), "secret": SECRET,
                              "kinds": ["response_level"]} for d in PLAN_DEPARTMENTS},
        }, allow_unicode=True), encoding="utf-8")
        worker = worker_factory(store_url, webhooks_file=str(hooks))
        worker.wait_healthy()

        def plan_steps() -> list[dict[str, Any]]:
            rows = query(store_url, "SELECT case_id, ts_ms, action, actor_kind, detail FROM case_transitions FINAL "
                                    f"WHERE action IN {PLAN_ACTIONS!r}")
            steps = [{**r, **json.loads(r["detail"])} for r in rows]
            return sorted(steps, key=lambda s: (s["ts_ms"], s["seq"]))

        def levels() -> list[tuple[str, int | None]]:
            return [(s["action"], s.get("plan_level")) for s in plan_steps()]   # None: not in the detail

        # up at once: 关注 → 预警 → 管控; then the crowd thins, but a count back above 0.8 x 3000 (2400) restarts
        # the step-down period: only the count 11 minutes after the restart steps the plan down (to 预警)
        produce_keyed(kafka.bootstrap, topic_prefix, [
            count("CAM-XH-001", 0, 900), count("CAM-XH-006", 2, 1600), count("CAM-XH-001", 4, 3200),
            count("CAM-XH-006", 6, 2000), count("CAM-XH-001", 10, 2500), count("CAM-XH-006", 14, 2000),
            count("CAM-XH-001", 17, 1900), count("CAM-XH-006", 25, 1700)])
        expected: list[tuple[str, int | None]] = [("response_level", 3), ("response_level", 2),
                                                  ("response_level", 1), ("step_down", 2)]
        wait_until(lambda: levels() == expected, 240, f"plan levels {expected}",
                   lambda: f"{levels()}\n{worker.tail()}")
        [case_id] = {s["case_id"] for s in plan_steps()}

        # the centre's 降级: 预警 → 关注
        step_down = action("SD-1", "step_down", t0 + timedelta(minutes=26), case_id=case_id)
        produce_keyed(kafka.bootstrap, topic_prefix, [("case.actions", case_id, step_down)])
        expected.append(("step_down", 3))
        wait_until(lambda: levels() == expected, 180, "the centre's step down", lambda: f"{levels()}\n{worker.tail()}")

        # below 640 (0.8 x 800) for 10 minutes: the KB's condition has cleared, the plan stands down
        produce_keyed(kafka.bootstrap, topic_prefix, [count("CAM-XH-001", 27, 500), count("CAM-XH-006", 33, 450),
                                                      count("CAM-XH-001", 38, 400)])
        expected.append(("stand_down", None))
        wait_until(lambda: levels() == expected, 180, "the plan stood down", lambda: f"{levels()}\n{worker.tail()}")

        steps = plan_steps()
        assert [s.get("from_level") for s in steps] == [None, 3, 2, 1, 2, 3]
        assert [s["count"] for s in steps] == [900, 1600, 3200, 1700, 1700, 400]
        assert [s["actor_kind"] for s in steps] == ["camera"] * 4 + ["center", "camera"]
        assert [s["ts_ms"] for s in steps] == [int((t0 + timedelta(minutes=m)).timestamp() * 1000)
                                               for m in (0, 2, 4, 25, 26, 38)]
        assert steps[2]["actions"] == ["地铁站限流", "商圈分流", "交通管制"] and steps[-1]["actions"] == []
        [case] = query(store_url, f"SELECT level, status, reporters FROM cases FINAL WHERE case_id = '{case_id}'")
        assert case["level"] == 2 and case["status"] == "handle"   # stood down: back to the KB route's level
        assert query(store_url, "SELECT count() AS n FROM cases FINAL")[0]["n"] == 1   # one case for the area

        # each change reached the departments of its level (stood down: of the level left), signed
        def hooks_by_change() -> dict[tuple[int | None, int | None], list[str]]:
            out: dict[tuple[int | None, int | None], list[str]] = {}
            for hit in receiver.unique():
                plan = hit["body"]["plan"]
                out.setdefault((plan["from_level"], plan["level"]), []).append(hit["body"]["department"])
            return {k: sorted(v) for k, v in out.items()}

        want = {(None, 3): LEVEL_DEPARTMENTS[3], (3, 2): LEVEL_DEPARTMENTS[2], (2, 1): LEVEL_DEPARTMENTS[1],
                (1, 2): LEVEL_DEPARTMENTS[2], (2, 3): LEVEL_DEPARTMENTS[3], (3, None): LEVEL_DEPARTMENTS[3]}
        want = {k: sorted(v) for k, v in want.items()}
        wait_until(lambda: hooks_by_change() == want, 180, "the response_level webhooks",
                   lambda: f"{hooks_by_change()}\n{worker.tail()}")
        assert receiver.bad_signatures == 0
        bodies = [h["body"] for h in receiver.unique()]
        assert {b["kind"] for b in bodies} == {"response_level"} and {b["case"]["case_id"] for b in bodies} == {case_id}
        by_level = {(b["plan"]["from_level"], b["plan"]["level"]): b for b in bodies}
        assert by_level[(2, 1)]["plan"]["name"] == "管控" and by_level[(2, 1)]["plan"]["area"] == "徐家汇商圈"
        assert by_level[(2, 1)]["plan"]["actions"] == ["地铁站限流", "商圈分流", "交通管制"]
        assert by_level[(2, 1)]["case"]["level"] == 1 and by_level[(3, None)]["plan"]["name"] == "解除"
        assert by_level[(3, None)]["case"]["level"] == 2
        assert worker.stop() == 0, worker.tail()
    delivered = query(store_url, "SELECT department, kind, status FROM webhook_deliveries FINAL "
                                 "WHERE kind = 'response_level'")
    assert len(delivered) == sum(len(v) for v in want.values()) and {d["status"] for d in delivered} == {"delivered"}
