"""The front door end to end: the real `streams gateway` and the real `streams worker` on a real broker,
with clickhouse-server as the store both share. Feeds and Open311 requests go in over HTTP (Open311 through
`civicbot`, a client nobody on the project wrote), the worker makes cases of them, and they are read back
through the work API, Open311 (`georeport`) and the progress page; a department and the centre act over
HTTP until the citizen's request is closed. The read lag (accepted → visible) is measured and printed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from civicbot import Endpoint, Open311Client
from civicbot.http import HttpTransport, RateLimiter
from georeport import GeoReport

from streams.local.kafka import LocalKafka, free_port
from tests.e2e.helpers import wait_until
from tests.fixtures.gateway import GatewayProcess, gateway_env, key_of, write_keys_file

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]


def headers(name: str) -> dict[str, str]:
    return {"X-Api-Key": key_of(name)}


def test_requests_in_over_http_become_cases_read_back_and_closed_over_http(
    kafka: LocalKafka,
    topic_prefix: str,
    worker_factory,
    store_url_factory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    store_url = store_url_factory("server")
    worker = worker_factory(store_url)
    worker.wait_healthy()
    port = free_port()
    gateway = GatewayProcess(
        gateway_env(kafka.bootstrap, topic_prefix, store_url, write_keys_file(tmp_path / "keys.yaml"), port),
        tmp_path,
        tmp_path / "gateway.log",
        port,
    ).start()
    request.addfinalizer(gateway.stop)
    gateway.wait_healthy()
    url = gateway.url

    # --- a 12345 call through the feed door
    call = {
        "call_id": "E2E-C1",
        "line": "12345",
        "received_at": "2026-11-20T09:30:00+08:00",
        "caller": "13800000000",
        "text": "斜土路1221号饭店油烟直排，家里窗户都不敢开",
        "address": "斜土路1221号",
    }
    fed = requests.post(f"{url}/v1/feeds/hotline.calls", json=call, headers=headers("feeder"), timeout=30)
    assert fed.status_code == 202 and fed.json()["accepted"] == 1, fed.text

    # --- a citizen's Open311 request through civicbot
    bot = Open311Client(
        Endpoint(id="citygrid-e2e", name="e2e", base_url=f"{url}/open311/v2", write=True),
        transport=HttpTransport(rate_limiter=RateLimiter(min_interval=0.0)),
    )
    posted_at = time.monotonic()
    filed = bot.create_request(
        "E0601",
        dry_run=False,
        confirm="SEND",
        api_key=key_of("civic-app"),
        address_string="钦江路15号",
        description="钦江路15号有6户居室群租，人员很杂",
        phone="13912345678",
    )
    request_id = filed.response[0]["service_request_id"]
    citizen = GeoReport(f"{url}/open311/v2")
    assert citizen.get_service_request(request_id)["status_notes"].startswith("已收到")  # at once

    def dispatched() -> bool:
        got = citizen.get_service_request(request_id)
        return got["agency_responsible"] == "房管办"

    wait_until(dispatched, 120, "the Open311 request to be dispatched", worker.tail)
    lag = time.monotonic() - posted_at
    print(f"\nread lag: Open311 request accepted → dispatched case visible through the gateway: {lag:.2f}s")
    got = citizen.get_service_request(request_id)
    assert got["status"] == "open" and got["expected_datetime"]

    # --- the work API: the department's queue holds both the feed's case and the citizen's
    def queue(name: str) -> list[dict]:
        return requests.get(f"{url}/v1/cases", headers=headers(name), timeout=30).json()["cases"]

    wait_until(lambda: len(queue("chengguan")) == 1, 60, "the hotline call's case in 城管执法中队's queue")
    [fumes] = queue("chengguan")
    assert fumes["category_name"] == "餐饮油烟" and fumes["status"] == "handle"
    [group_rent] = queue("fangguan")
    assert group_rent["category_name"] == "群租"
    case_id = group_rent["case_id"]
    detail = requests.get(f"{url}/v1/cases/{case_id}", headers=headers("fangguan"), timeout=30).json()
    assert f"open311:{request_id}" in detail["sources"] and detail["dispatches"][0]["primary_department"] == "房管办"

    # --- the department reports it handled, the centre verifies and closes: all over HTTP
    acted_at = time.monotonic()
    handled = requests.post(
        f"{url}/v1/cases/{case_id}/actions",
        headers=headers("fangguan"),
        timeout=30,
        json={"action": "handled", "note": "已现场协调处置", "photos": ["s3://after/qz.jpg"]},
    )
    assert handled.status_code == 202, handled.text
    wait_until(
        lambda: citizen.get_service_request(request_id)["status_notes"].startswith("已处置"),
        60,
        "the handled report to reach the citizen",
        worker.tail,
    )
    print(f"read lag: action accepted → visible to the citizen: {time.monotonic() - acted_at:.2f}s")
    for action in ("verify_pass", "close"):
        answer = requests.post(
            f"{url}/v1/cases/{case_id}/actions", headers=headers("centre"), json={"action": action}, timeout=30
        )
        assert answer.status_code == 202 and answer.json()["actor"] == {"kind": "center", "id": "街道网格中心"}
        expected = "verify" if action == "verify_pass" else "closed"
        wait_until(
            lambda expected=expected: (
                requests.get(f"{url}/v1/cases/{case_id}", headers=headers("centre"), timeout=30).json()["status"]
                == expected
            ),
            60,
            f"{action} applied",
            worker.tail,
        )
    closed = citizen.get_service_request(request_id)
    assert closed["status"] == "closed" and closed["status_notes"].startswith("已结案")
    history = requests.get(f"{url}/v1/cases/{case_id}", headers=headers("centre"), timeout=30).json()["history"]
    assert [(h["action"], h["actor_kind"], h["actor_id"]) for h in history[-3:]] == [
        ("handled", "department", "房管办"),
        ("verify_pass", "center", "街道网格中心"),
        ("close", "center", "街道网格中心"),
    ]

    page = requests.get(f"{url}/progress/{request_id}", timeout=30)
    assert page.status_code == 200 and "已结案" in page.text and "房管办" in page.text
    assert "13912345678" not in page.text and "钦江路15号" not in page.text
    assert worker.stop() == 0, worker.tail()
    assert gateway.stop() == 0, gateway.tail()


def test_gateway_inside_the_worker_on_chdb(
    kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory, tmp_path: Path
) -> None:
    """`make demo`'s arrangement: the embedded chdb store is held by the worker, so the gateway runs in it."""
    port = free_port()
    worker = worker_factory(
        store_url_factory("chdb"),
        gateway_in_worker="true",
        gateway_port=str(port),
        gateway_keys_file=str(write_keys_file(tmp_path / "keys.yaml")),
    )
    worker.wait_healthy()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _up(url), 60, "the gateway inside the worker", worker.tail)
    form = {
        "api_key": key_of("civic-app"),
        "service_code": "E0102",
        "address_string": "斜土路1221号",
        "description": "饭店油烟直排",
    }
    answer = requests.post(f"{url}/open311/v2/requests.json", data=form, timeout=30)
    assert answer.status_code == 200, answer.text
    request_id = answer.json()[0]["service_request_id"]
    wait_until(
        lambda: (
            requests.get(f"{url}/open311/v2/requests/{request_id}.json", timeout=30).json()[0]["agency_responsible"]
            == "城管执法中队"
        ),
        120,
        "the request's case",
        worker.tail,
    )
    cases = requests.get(f"{url}/v1/cases", headers=headers("chengguan"), timeout=30).json()
    assert cases["total"] == 1 and cases["cases"][0]["origin"] == "open311"
    assert worker.stop() == 0, worker.tail()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).json()["kafka"] is True
    except (requests.RequestException, json.JSONDecodeError, KeyError):
        return False
