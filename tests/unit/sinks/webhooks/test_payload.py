"""Payloads built from lifecycle notifications: schema-valid, stable keys, no phone numbers in clear."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streams.bus.codec import registry
from streams.sinks.webhooks import NotificationError, WebhooksConfig, build_deliveries, encode_delivery
from streams.sinks.webhooks.config import DEPARTMENTS, KINDS
from streams.sinks.webhooks.payload import idempotency_key, mask_phones
from tests.paths import REPO_ROOT

SCHEMA = json.loads((REPO_ROOT / "schemas" / "webhook_payload.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
SECRET = "s3cret-s3cret-s3cret"


def config(**extra) -> WebhooksConfig:
    return WebhooksConfig.model_validate({
        "links_base_url": "https://grid.example.gov.cn/wall",
        "endpoints": {
            "房管办": {"url": "http://127.0.0.1:1/a", "secret": SECRET},
            "城管执法中队": {"url": "http://127.0.0.1:1/b", "secret": SECRET, "kinds": ["dispatch", "escalate"]},
        },
        **extra,
    })


def note(**over) -> dict:
    base = {"kind": "dispatch", "case_id": "XH03-20260315-0a1b2c3d", "ts_ms": 1_773_540_000_000,
            "departments": ["房管办", "城管执法中队", "物业公司"], "category_code": "0107", "category_name": "群租",
            "level": 3, "deadline_ms": 1_773_600_000_000, "address": "徐汇区天平路100弄3号", "lat": 31.2035,
            "lon": 121.4452, "cell": "8a309a6ba4f7fff", "street": "天平路街道", "event_id": "ev-1"}
    base.update(over)
    return base


def test_one_delivery_per_department_with_an_endpoint_wanting_the_kind() -> None:
    records = build_deliveries(note(), config(), now_ms=5)
    assert [r["department"] for r in records] == ["房管办", "城管执法中队"]  # 物业公司 has no endpoint
    urge = build_deliveries(note(kind="urge"), config(), now_ms=5)
    assert [r["department"] for r in urge] == ["房管办"]  # 城管执法中队 wants dispatch/escalate only
    for r in records:
        assert r["case_id"] == "XH03-20260315-0a1b2c3d" and r["attempt"] == 1 and r["created_ms"] == 5
        assert r["idempotency_key"] == idempotency_key("ev-1", r["department"])
        key, value = encode_delivery(r)  # the record fits the Avro schema and round-trips
        assert key == r["case_id"].encode()
        assert registry().decode(value, "webhook_delivery")[1] == r


def test_payload_fields_and_link() -> None:
    body = json.loads(build_deliveries(note(), config())[0]["payload"])
    VALIDATOR.validate(body)
    assert body["kind"] == "dispatch" and body["department"] == "房管办"
    assert body["case"] == {"case_id": "XH03-20260315-0a1b2c3d", "category_code": "0107", "category_name": "群租",
                            "level": 3, "deadline_ms": 1_773_600_000_000, "deadline_at": "2026-03-15T18:40:00.000Z"}
    assert body["location"]["street"] == "天平路街道" and body["location"]["lat"] == 31.2035
    assert body["links"]["case"] == "https://grid.example.gov.cn/wall/cases/XH03-20260315-0a1b2c3d"
    assert body["idempotency_key"] == build_deliveries(note(), config())[0]["idempotency_key"]


def test_key_is_stable_and_distinct_per_event_and_department() -> None:
    a = build_deliveries(note(), config(), now_ms=1)
    b = build_deliveries(note(), config(), now_ms=999)
    assert [r["idempotency_key"] for r in a] == [r["idempotency_key"] for r in b]
    assert a[0]["payload"] == b[0]["payload"]  # the body does not depend on when it was built
    c = build_deliveries(note(event_id="ev-2"), config())
    keys = {r["idempotency_key"] for r in a + c}
    assert len(keys) == 4


def test_caller_phone_is_hashed_with_a_key_or_dropped() -> None:
    phone = "13812345678"
    with_key = build_deliveries(note(caller=phone, address=f"天平路100弄 联系 {phone}"), config(pii_hash_key="k" * 20))
    without = build_deliveries(note(caller_phone=phone), config())
    for r in with_key + without:
        assert phone not in r["payload"] and "12345678" not in r["payload"]
        VALIDATOR.validate(json.loads(r["payload"]))
    hashed = json.loads(with_key[0]["payload"])
    assert re.fullmatch(r"[0-9a-f]{32}", hashed["caller_ref"])
    assert hashed["location"]["address"].endswith("138****5678")
    assert "caller_ref" not in json.loads(without[0]["payload"])
    # the same caller gets the same reference (repeat calls can be linked without the number)
    again = build_deliveries(note(caller="138-1234-5678", event_id="other"), config(pii_hash_key="k" * 20))
    assert json.loads(again[0]["payload"])["caller_ref"] == hashed["caller_ref"]


@pytest.mark.parametrize("text,masked", [
    ("13812345678", "138****5678"), ("电话021-64871234请回", "电话021-****1234请回"),
    ("+86 13912345678", "+86 139****5678"),
    ("身份证310104198001011234", "身份证310***********1234"),
    ("漕溪北路1200号", "漕溪北路1200号"), ("天平路100弄3号201室", "天平路100弄3号201室"),
])
def test_mask_phones(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize("bad,message", [
    ({"kind": "teleport"}, "kind"), ({"case_id": None}, "case_id"), ({"event_id": None}, "event_id"),
    ({"ts_ms": "yesterday"}, "ts_ms"), ({"departments": "房管办"}, "departments"), ({"level": 9}, "level"),
    ({"lat": "north"}, "lat"),
])
def test_bad_notifications_raise_a_clear_error(bad: dict, message: str) -> None:
    with pytest.raises(NotificationError, match=message):
        build_deliveries(note(**bad), config())


def test_bad_notification_is_an_error_even_without_listeners() -> None:
    with pytest.raises(NotificationError, match="case_id"):
        build_deliveries(note(departments=["物业公司"], case_id=None), config())


phones = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
texts = st.text(alphabet=st.sampled_from(list("天平路弄号室街道小区 -0123456789")), max_size=30)


@hsettings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    departments=st.lists(st.sampled_from(DEPARTMENTS), max_size=5),
    level=st.one_of(st.none(), st.sampled_from([1, 2, 3, 4])),
    deadline=st.one_of(st.none(), st.integers(0, 4_102_444_800_000)),
    lat=st.one_of(st.none(), st.floats(-90, 90)), lon=st.one_of(st.none(), st.floats(-180, 180)),
    address=st.one_of(st.none(), texts), phone=phones, where=st.integers(0, 30),
    cell=st.one_of(st.none(), st.text(max_size=16)), event_id=st.text(min_size=1, max_size=40),
)
def test_every_built_payload_validates_and_hides_phones(kind, departments, level, deadline, lat, lon, address, phone,
                                                          where, cell, event_id) -> None:
    cfg = WebhooksConfig.model_validate({"endpoints": {d: {"url": "https://h/", "secret": SECRET} for d in DEPARTMENTS},
                                         "pii_hash_key": "pii-key-pii-key"})
    if address is not None:
        address = address[:where] + " " + phone + " " + address[where:]
    records = build_deliveries(note(kind=kind, departments=departments, level=level, deadline_ms=deadline, lat=lat,
                                    lon=lon, address=address, cell=cell, event_id=event_id, caller=phone), cfg)
    assert [r["department"] for r in records] == list(dict.fromkeys(departments))
    for r in records:
        body = json.loads(r["payload"])
        VALIDATOR.validate(body)
        assert phone not in r["payload"]
        assert body["kind"] == kind and body["idempotency_key"] == r["idempotency_key"]


def test_a_street_instance_with_its_own_endpoint_receives_instead_of_its_kind() -> None:
    cfg = WebhooksConfig.model_validate({"endpoints": {
        "徐家汇街道城管中队": {"url": "https://xjh/", "secret": SECRET},
        "城管执法中队": {"url": "https://all/", "secret": SECRET},
        "房管办": {"url": "https://housing/", "secret": SECRET}}})
    note = {"kind": "dispatch", "case_id": "XH09-20261102-00000001", "ts_ms": 1, "event_id": "e1", "level": 3,
            "departments": ["城管执法中队", "房管办"], "units": ["徐家汇街道城管中队", "徐家汇街道房管办"]}
    assert [d["department"] for d in build_deliveries(note, cfg, now_ms=0)] == ["徐家汇街道城管中队", "房管办"]
    other_street = {**note, "event_id": "e2", "units": ["斜土街道城管中队", "斜土街道房管办"]}
    assert [d["department"] for d in build_deliveries(other_street, cfg, now_ms=0)] == ["城管执法中队", "房管办"]
    no_units = {k: v for k, v in note.items() if k != "units"}
    assert [d["department"] for d in build_deliveries(no_units, cfg, now_ms=0)] == ["城管执法中队", "房管办"]


def test_an_endpoint_must_name_a_kind_or_a_known_instance() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown department"):
        WebhooksConfig.model_validate({"endpoints": {"火星街道城管中队": {"url": "https://x/", "secret": SECRET}}})
