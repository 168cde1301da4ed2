"""Open311 GeoReport v2 with clients nobody on the project wrote: `georeport` reads (JSON and XML), `civicbot`
files requests (form POST with api_key). Every answer is checked against the Open311 project's JSON Schemas."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import requests
from civicbot import Endpoint, HttpError, Open311Client
from civicbot.http import HttpTransport, RateLimiter
from georeport import GeoReport
from kafka import KafkaConsumer

from streams.bus.codec import registry
from streams.local.kafka import LocalKafka
from streams.storage import Store
from tests.fixtures.gateway import GatewayThread, key_of
from tests.integration.gateway.open311_schemas import validate, validate_errors, validate_swagger
from tests.integration.gateway.seed import City

pytestmark = [pytest.mark.kafka]


def civicbot(gateway: GatewayThread) -> Open311Client:
    endpoint = Endpoint(
        id="citygrid-test", name="Xuhui (test gateway)", base_url=f"{gateway.url}/open311/v2", write=True
    )
    return Open311Client(endpoint, transport=HttpTransport(rate_limiter=RateLimiter(min_interval=0.0)))


def raw(gateway: GatewayThread, path: str, **params) -> requests.Response:
    return requests.get(f"{gateway.url}/open311/v2/{path}", params=params, timeout=30)


def file_noise(gateway: GatewayThread, **extra) -> str:
    prepared = civicbot(gateway).create_request(
        "E0103",
        dry_run=False,
        confirm="SEND",
        api_key=key_of("civic-app"),
        address_string="钦江路101号",
        description="楼下夜市摊贩的喇叭太吵了",
        attributes={"where": "stall", "decibel": "yes"},
        media_url="https://example.org/photo/1.jpg",
        email="Citizen@Example.org",
        first_name="张",
        **extra,
    )
    validate_swagger("RequestResponse", prepared.response)
    [answer] = prepared.response
    assert "/progress/" in answer["service_notice"]
    return answer["service_request_id"]


def test_services_and_definitions_read_by_georeport_in_json_and_xml(gateway: GatewayThread) -> None:
    as_json = GeoReport(f"{gateway.url}/open311/v2").get_service_list()
    validate("services", as_json)
    noise = next(s for s in as_json if s["service_code"] == "E0103")
    assert noise["service_name"] == "噪声扰民" and noise["group"] == "事件 · 市容环境" and noise["metadata"] is True
    assert "广场舞" in noise["keywords"].split(",")
    assert next(s for s in as_json if s["service_code"] == "B0103")["metadata"] is False

    as_xml = GeoReport(f"{gateway.url}/open311/v2", output_format="xml").get_service_list()
    assert [s["service_code"] for s in as_xml] == [s["service_code"] for s in as_json]
    assert next(s for s in as_xml if s["service_code"] == "E0103")["metadata"] == "true"

    definition = GeoReport(f"{gateway.url}/open311/v2").get_service_definition("E0103")
    validate("service-definition", definition)
    where = definition["attributes"][0]
    assert where["code"] == "where" and {v["key"] for v in where["values"]} >= {"stall", "street_front", "compound"}
    xml_definition = GeoReport(f"{gateway.url}/open311/v2", output_format="xml").get_service_definition("E0103")
    assert xml_definition["service_code"] == "E0103"
    assert [a["code"] for a in xml_definition["attributes"]["attribute"]] == ["where", "decibel"]
    validate("service-definition", GeoReport(f"{gateway.url}/open311/v2").get_service_definition("B0103"))


def test_civicbot_files_a_request_that_is_retrievable_at_once(
    gateway: GatewayThread, kafka: LocalKafka, topic_prefix: str
) -> None:
    request_id = file_noise(gateway)

    # on the raw feed, as the worker will read it: no personal data, a pseudonym of the email
    consumer = KafkaConsumer(
        f"{topic_prefix}.open311.requests",
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    [message] = list(consumer)
    consumer.close()
    name, record = registry().decode(message.value)
    assert name == "open311_request" and message.key == request_id.encode()
    assert record["request_id"] == request_id and record["client"] == "civic-app"
    assert record["attributes"] == {"where": ["stall"], "decibel": ["yes"]}
    text = json.dumps(record, ensure_ascii=False)
    assert "Citizen@Example.org".lower() not in text.lower() and "张" not in text
    assert record["reporter"].startswith("caller-")

    # retrievable immediately (before the pipeline has stored anything), by both clients, JSON and XML
    got = GeoReport(f"{gateway.url}/open311/v2").get_service_request(request_id)
    validate("requests", [got])
    assert (got["service_request_id"], got["status"], got["service_code"]) == (request_id, "open", "E0103")
    assert got["status_notes"].startswith("已收到")
    xml_got = GeoReport(f"{gateway.url}/open311/v2", output_format="xml").get_service_request(request_id)
    assert xml_got["service_request_id"] == request_id and xml_got["status"] == "open"
    assert civicbot(gateway).get_request(request_id)["service_request_id"] == request_id
    token = civicbot(gateway).get_token(request_id)
    validate_swagger("TokenResponse", token)
    assert token == [{"service_request_id": request_id, "token": request_id}]


def test_the_request_follows_its_case_status_agency_and_deadline(
    gateway: GatewayThread, kafka: LocalKafka, topic_prefix: str, chdb_store: Store, knowledge
) -> None:
    request_id = file_noise(gateway)
    other_id = (
        civicbot(gateway)
        .create_request(
            "B0103",
            dry_run=False,
            confirm="SEND",
            api_key=key_of("civic-app"),
            address_string="天钥桥路300号",
            description="路灯不亮",
        )
        .response[0]["service_request_id"]
    )
    consumer = KafkaConsumer(
        f"{topic_prefix}.open311.requests",
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    records = {registry().decode(m.value)[1]["request_id"]: registry().decode(m.value)[1] for m in consumer}
    consumer.close()
    # what the worker does with them (ingest + case engine), written to the tables the gateway reads
    city = City(knowledge, chdb_store)
    [case_id] = city.raw("open311_request", records[request_id])
    city.raw("open311_request", records[other_id])

    got = GeoReport(f"{gateway.url}/open311/v2").get_service_request(request_id)
    validate("requests", [got])
    assert got["status"] == "open" and got["status_notes"].startswith("已派遣")
    assert got["agency_responsible"] == "城管执法中队"  # a stall's noise (the citizen's answer)
    assert got["expected_datetime"] and got["expected_datetime"] > got["requested_datetime"]
    assert got["description"] == "楼下夜市摊贩的喇叭太吵了" and got["media_url"] == "https://example.org/photo/1.jpg"

    # the department handles it, the centre verifies and closes: the request is closed
    for action in (
        {"action": "handled", "actor_kind": "department", "actor_id": "城管执法中队"},
        {"action": "verify_pass", "actor_kind": "center", "actor_id": "街道网格中心"},
        {"action": "close", "actor_kind": "center", "actor_id": "街道网格中心"},
    ):
        assert not city.act(
            {"action_id": f"a-{action['action']}", "ts": "2030-01-01T10:00:00+08:00", "case_id": case_id, **action}
        )["rejections"]
    closed = GeoReport(f"{gateway.url}/open311/v2").get_service_request(request_id)
    validate("requests", [closed])
    assert closed["status"] == "closed" and closed["expected_datetime"] is None
    assert closed["updated_datetime"].startswith("2030-01-01T10:00:00")

    # GET requests with filters, through both clients
    client = GeoReport(f"{gateway.url}/open311/v2")
    everything = client.get_service_requests(start_date="2000-01-01T00:00:00Z", end_date="2000-03-01T00:00:00Z")
    assert everything == []
    recent = client.get_service_requests()
    validate("requests", recent)
    assert {r["service_request_id"] for r in recent} == {request_id, other_id}
    assert [r["service_request_id"] for r in client.get_service_requests(status="closed")] == [request_id]
    assert [r["service_request_id"] for r in client.get_service_requests(status="open")] == [other_id]
    assert [r["service_request_id"] for r in client.get_service_requests(service_code="B0103")] == [other_id]
    both = civicbot(gateway).list_requests(service_request_ids=[other_id, request_id, "nope"])
    validate("requests", both)
    assert [r["service_request_id"] for r in both] == [other_id, request_id]
    as_xml = GeoReport(f"{gateway.url}/open311/v2", output_format="xml").get_service_requests(status="open,closed")
    assert {r["service_request_id"] for r in as_xml} == {request_id, other_id}


def test_errors_are_the_specs_list_with_400_403_404(gateway: GatewayThread) -> None:
    bot = civicbot(gateway)
    with pytest.raises(HttpError) as missing_key:
        bot.http.post_form(
            f"{gateway.url}/open311/v2/requests.json", {"service_code": "E0103", "lat": 31.17, "long": 121.4}
        )
    assert missing_key.value.status == 403
    validate_errors(json.loads(missing_key.value.body))
    with pytest.raises(HttpError) as wrong_scope:
        bot.create_request("E0103", dry_run=False, confirm="SEND", api_key=key_of("feeder"), lat=31.17, lng=121.4)
    assert wrong_scope.value.status == 403 and "open311" in wrong_scope.value.body
    with pytest.raises(HttpError) as unknown_service:
        bot.create_request("X0000", dry_run=False, confirm="SEND", api_key=key_of("civic-app"), lat=31.17, lng=121.4)
    assert unknown_service.value.status == 404
    validate_errors(json.loads(unknown_service.value.body))
    form = {"api_key": key_of("civic-app"), "service_code": "E0103"}
    no_place = requests.post(f"{gateway.url}/open311/v2/requests.json", data=form, timeout=10)
    assert no_place.status_code == 400 and "location" in no_place.json()[0]["description"]
    bad_answer = requests.post(
        f"{gateway.url}/open311/v2/requests.json",
        timeout=10,
        data={**form, "lat": "31.17", "long": "121.4", "attribute[where]": "moon"},
    )
    assert bad_answer.status_code == 400 and "attribute[where]" in bad_answer.json()[0]["description"]
    not_a_number = requests.post(
        f"{gateway.url}/open311/v2/requests.xml", data={**form, "lat": "north", "long": "1"}, timeout=10
    )
    assert not_a_number.status_code == 400 and not_a_number.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(not_a_number.content)
    assert root.tag == "errors" and root.find("error/code").text == "400"

    for path in ("requests/20260101-0000000000.json", "tokens/nope.json", "services/X0000.json"):
        answer = raw(gateway, path)
        assert answer.status_code == 404, path
        validate_errors(answer.json())
    assert raw(gateway, "services.json", jurisdiction_id="elsewhere.gov").status_code == 404
    assert raw(gateway, "services.json", jurisdiction_id="xuhui.sh.cn").status_code == 200
    assert raw(gateway, "services.html").status_code == 400
    assert raw(gateway, "requests.json", start_date="yesterday").status_code == 400
    assert (
        raw(gateway, "requests.json", start_date="2026-01-01T00:00:00Z", end_date="2026-06-01T00:00:00Z").status_code
        == 400
    )
    assert raw(gateway, "requests.json", status="pending").status_code == 400
