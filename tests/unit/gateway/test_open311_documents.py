"""Open311 documents and form handling without a server: XML in the spec's shape, the form → feed record
(no personal data), the errors; and the progress page's HTML (no personal data)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from multidict import MultiDict

from streams.bus.codec import registry
from streams.core.knowledge.knowledge import Knowledge
from streams.core.knowledge.services import catalogue
from streams.core.privacy import Pseudonymizer, PseudonymKey
from streams.gateway.open311 import Open311Error, build_request, service_definition, split_format, to_xml
from streams.gateway.progress import render_page
from streams.gateway.tracking import Tracking

KEYED = Pseudonymizer(PseudonymKey.from_secret("gateway-test-pseudonym-key-00000001"))


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


@pytest.fixture(scope="module")
def services(kb: Knowledge) -> dict:
    return {s.code: s for s in catalogue(kb)}


def test_xml_has_the_specs_shape(services: dict) -> None:
    root = ET.fromstring(to_xml("service_definition", service_definition(services["E0103"])))
    assert root.tag == "service_definition" and root.find("service_code").text == "E0103"
    attributes = root.findall("attributes/attribute")
    assert [a.find("code").text for a in attributes] == ["where", "decibel"]
    assert attributes[0].find("variable").text == "true"
    assert [v.find("key").text for v in attributes[0].findall("values/value")][:1] == ["compound"]
    assert to_xml("errors", [{"code": 403, "description": "x"}]).startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    empty = ET.fromstring(to_xml("service_requests", [{"service_request_id": "1", "description": None}]))
    assert empty.find("request/description").text is None


def test_the_form_becomes_a_valid_feed_record_without_personal_data(kb: Knowledge, services: dict) -> None:
    form = MultiDict(
        [
            ("service_code", "E0103"),
            ("lat", "31.1712"),
            ("long", "121.4072"),
            ("description", " 太吵 "),
            ("attribute[where]", "street_front"),
            ("attribute[decibel][]", "yes"),
            ("email", "A@B.org"),
            ("first_name", "明"),
            ("phone", "139"),
            ("jurisdiction_id", "xuhui"),
        ]
    )
    record = build_request(form, services, kb, "app", KEYED)
    valid = registry().from_json("open311_request", record)
    assert valid["attributes"] == {"where": ["street_front"], "decibel": ["yes"]}
    assert (valid["lat"], valid["lon"], valid["description"], valid["client"]) == (31.1712, 121.4072, "太吵", "app")
    assert "A@B.org" not in str(valid) and "明" not in str(valid) and valid["reporter"].startswith("caller-")
    same_person = form.copy()
    same_person["email"] = "a@b.ORG"  # an email is case-insensitive: one person, one pseudonym
    assert build_request(same_person, services, kb, "app", KEYED)["reporter"] == valid["reporter"]
    by_phone = MultiDict([(k, v) for k, v in form.items() if k != "email"] + [("phone", "+86 139-1234-5678")])
    del by_phone["phone"]
    by_phone["phone"] = "+86 139-1234-5678"
    assert build_request(by_phone, services, kb, "app", KEYED)["reporter"] == KEYED.caller("13912345678"), \
        "one person, one pseudonym: the app's phone and the hotline's caller"
    assert valid["request_id"] != build_request(form, services, kb, "app", KEYED)["request_id"]


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({}, 400, "service_code was not provided"),
        ({"service_code": "Z1"}, 404, "not found"),
        ({"service_code": "E0103"}, 400, "location is required"),
        ({"service_code": "E0103", "lat": "31"}, 400, "together"),
        ({"service_code": "E0103", "lat": "x", "long": "1"}, 400, "number"),
        ({"service_code": "E0103", "address_string": "a", "description": "x" * 4001}, 400, "4000"),
        ({"service_code": "E0103", "address_string": "a", "media_url": "javascript:alert(1)"}, 400, "http"),
        ({"service_code": "E0103", "address_string": "a", "attribute[where]": "moon"}, 400, "attribute[where]"),
    ],
)
def test_form_errors(kb: Knowledge, services: dict, fields: dict, status: int, words: str) -> None:
    with pytest.raises(Open311Error) as info:
        build_request(MultiDict(fields), services, kb, "app", KEYED)
    assert info.value.status == status and words in info.value.description


def test_format_suffix() -> None:
    assert split_format("E0103.json") == ("E0103", "json")
    assert split_format("20261120-abc.xml") == ("20261120-abc", "xml")
    with pytest.raises(Open311Error) as info:
        split_format("E0103.html")
    assert info.value.status == 400
    with pytest.raises(Open311Error):
        split_format("E0103")


def test_progress_page_shows_stages_department_deadline_and_no_personal_data() -> None:
    case = {
        "case_id": "XH07-20261120-1",
        "status": "handle",
        "stages": '{"discover": 1795000000000, "register": 1795000000000, "dispatch": 1795000060000}',
        "light": "yellow",
        "deadline_ms": 1795300000000,
        "updated_ms": 1795000060000,
        "reporters": 3,
        "departments": ["房管办"],
        "community": "怡桂苑",
        "closed_ms": 0,
        "on_time": 0,
    }
    t = Tracking(
        "20261120-0123456789",
        "E0601",
        "群租",
        "我家电话13900000000",
        "钦江路15号",
        None,
        None,
        None,
        1795000000000,
        "case",
        case=case,
        street="虹梅街道",
        dispatch={"primary_department": "房管办", "deadline_ms": 1795300000000},
    )
    html = render_page(t)
    assert "群租" in html and "房管办" in html and "黄灯" in html and "处置中" in html and "3 人反映" in html
    assert 'class="now"><span class="stage">处置' in html and 'class="done"><span class="stage">派遣' in html
    assert "13900000000" not in html and "钦江路15号" not in html
    assert '<meta name="viewport"' in html and "<script" not in html
