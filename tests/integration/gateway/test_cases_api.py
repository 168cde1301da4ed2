"""The departments' work API over the ClickHouse tables the pipeline writes: the queue (filters, paging, a
department sees its own cases), one case with stages, lights, deadline and history, and actions produced to
case.actions with the key's actor."""

from __future__ import annotations

import pytest
import requests
from kafka import KafkaConsumer

from streams.bus.codec import registry
from streams.local.kafka import LocalKafka
from streams.storage import Store
from tests.fixtures.gateway import GatewayThread, key_of
from tests.integration.gateway.seed import City

pytestmark = [pytest.mark.kafka]


def call(call_id: str, text: str, address: str, at: str = "2026-11-20T09:30:00+08:00") -> dict:
    return {
        "call_id": call_id,
        "line": "12345",
        "received_at": at,
        "caller": "13800000000",
        "text": text,
        "address": address,
    }


@pytest.fixture
def city(chdb_store: Store, knowledge) -> City:
    city = City(knowledge, chdb_store)
    city.raw("hotline_call", call("C-YY", "斜土路1221号饭店油烟直排", "斜土路1221号"))  # 城管执法中队
    city.raw("hotline_call", call("C-QZ", "钦江路15号有6户居室群租", "钦江路15号"))  # 房管办
    city.raw(
        "hotline_call", call("C-XGG", "宜山路455号门口小广告贴满了", "宜山路455号", "2026-11-20T10:00:00+08:00")
    )  # 城管执法中队, quick
    return city


def get(gateway: GatewayThread, path: str, key: str | None = "centre", **params) -> requests.Response:
    headers = {"X-Api-Key": key_of(key)} if key else {}
    return requests.get(f"{gateway.url}{path}", params=params, headers=headers, timeout=30)


def test_the_queue_filters_pages_and_limits_a_department_to_its_cases(gateway: GatewayThread, city: City) -> None:
    everything = get(gateway, "/v1/cases").json()
    assert everything["total"] == 3 and {c["status"] for c in everything["cases"]} == {"handle"}
    # most urgent first: the quick 小广告 case has the earliest handling deadline
    assert everything["cases"][0]["category_name"] == "非法小广告"
    deadlines = [c["deadline"] for c in everything["cases"]]
    assert deadlines == sorted(deadlines)

    mine = get(gateway, "/v1/cases", key="chengguan").json()
    assert mine["total"] == 2 and all("城管执法中队" in c["departments"] for c in mine["cases"])
    assert get(gateway, "/v1/cases", key="chengguan", department="房管办").status_code == 403
    assert get(gateway, "/v1/cases", key="reader", department="房管办").json()["total"] == 1
    page2 = get(gateway, "/v1/cases", page=2, page_size=2).json()
    assert (page2["total"], len(page2["cases"])) == (3, 1)
    assert get(gateway, "/v1/cases", stage="closed").json()["total"] == 0
    assert get(gateway, "/v1/cases", light="green").json()["total"] == 3
    assert get(gateway, "/v1/cases", stage="finished").status_code == 400
    assert get(gateway, "/v1/cases", page_size=100000).status_code == 400
    assert get(gateway, "/v1/cases", key=None).status_code == 401
    assert get(gateway, "/v1/cases", key="civic-app").status_code == 403


def test_one_case_with_stages_lights_deadline_and_history(gateway: GatewayThread, city: City) -> None:
    queue = get(gateway, "/v1/cases", key="fangguan").json()["cases"]
    [case] = queue
    detail = get(gateway, f"/v1/cases/{case['case_id']}", key="fangguan").json()
    assert detail["category_name"] == "群租" and detail["departments"] == ["房管办"] and detail["level"] == 3
    stages = {s["stage"]: s for s in detail["stages"]}
    assert [s["zh"] for s in detail["stages"]] == ["发现", "立案", "派遣", "处置", "核查", "结案"]
    assert stages["discover"]["done_at"].startswith("2026-11-20T09:30:00+08:00")
    assert stages["dispatch"]["done_at"] and stages["handle"]["done_at"] is None
    assert stages["handle"]["light"] == "green"
    assert detail["deadline"] and detail["dispatches"][0]["primary_department"] == "房管办"
    assert [h["action"] for h in detail["history"]][:3] == ["discover", "register", "dispatch"]
    # another department's key does not see it
    assert get(gateway, f"/v1/cases/{case['case_id']}", key="chengguan").status_code == 404
    assert get(gateway, "/v1/cases/XH07-20261120-deadbeef").status_code == 404


def test_an_action_goes_to_case_actions_with_the_keys_actor(
    gateway: GatewayThread, city: City, kafka: LocalKafka, topic_prefix: str
) -> None:
    [case] = get(gateway, "/v1/cases", key="fangguan").json()["cases"]
    url = f"{gateway.url}/v1/cases/{case['case_id']}/actions"
    headers = {"X-Api-Key": key_of("fangguan")}
    done = requests.post(
        url,
        json={"action": "handled", "note": "已现场协调处置", "photos": ["s3://after/1.jpg"], "action_id": "fg-1"},
        headers=headers,
        timeout=30,
    )
    assert done.status_code == 202, done.text
    assert done.json()["actor"] == {"kind": "department", "id": "房管办"}
    assert done.json()["action_id"] == "fangguan:fg-1"

    forged = requests.post(
        url, json={"action": "close", "actor_kind": "center", "actor_id": "中心"}, headers=headers, timeout=30
    )
    assert forged.status_code == 400 and "the API key" in forged.json()["error"]["reason"]
    unknown = requests.post(url, json={"action": "celebrate"}, headers=headers, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["error"]["errors"][0]["field"] == "action"
    nobody = requests.post(url, json={"action": "urge"}, headers={"X-Api-Key": key_of("reader")}, timeout=30)
    assert nobody.status_code == 403
    others = requests.post(url, json={"action": "urge"}, headers={"X-Api-Key": key_of("chengguan")}, timeout=30)
    assert others.status_code == 404  # not a case of that department
    bad_extend = requests.post(url, json={"action": "extend", "extend_minutes": "soon"}, headers=headers, timeout=30)
    assert bad_extend.status_code == 400 and bad_extend.json()["error"]["errors"][0]["field"] == "extend_minutes"

    consumer = KafkaConsumer(
        f"{topic_prefix}.case.actions",
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    messages = list(consumer)
    consumer.close()
    assert len(messages) == 1
    name, action = registry().decode(messages[0].value)
    assert name == "case_action" and messages[0].key == case["case_id"].encode()
    assert (action["actor_kind"], action["actor_id"], action["action"]) == ("department", "房管办", "handled")
    assert action["photos"] == ["s3://after/1.jpg"] and action["case_id"] == case["case_id"]

    # the pipeline's engine applies it as the department's own action
    city.act({**action})
    detail = get(gateway, f"/v1/cases/{case['case_id']}", key="fangguan").json()
    assert detail["status"] == "verify"
    assert detail["history"][-1]["actor_id"] == "房管办" and detail["history"][-1]["action"] == "handled"
