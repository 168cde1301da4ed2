"""POST /v1/feeds/<topic> on a real broker: valid records land on the topic as the worker's Avro, invalid ones
are answered field by field and not produced; limits answer 413 and 429 with Retry-After."""

from __future__ import annotations

import json

import pytest
import requests
from kafka import KafkaConsumer

from streams.bus.codec import registry
from streams.local.kafka import LocalKafka
from tests.fixtures.gateway import GatewayThread, key_of

pytestmark = [pytest.mark.kafka]


def call(call_id: str, **kw) -> dict:
    return {
        "call_id": call_id,
        "line": "12345",
        "received_at": "2026-11-20T09:30:00+08:00",
        "caller": "13800000000",
        "text": "钦江路15号有人群租",
        "address": "钦江路15号",
        **kw,
    }


def post(
    gateway: GatewayThread,
    topic: str,
    body: bytes | str,
    key: str | None = "feeder",
    content_type: str = "application/json",
) -> requests.Response:
    headers = {"Content-Type": content_type}
    if key:
        headers["X-Api-Key"] = key_of(key)
    data = body.encode() if isinstance(body, str) else body
    return requests.post(f"{gateway.url}/v1/feeds/{topic}", data=data, headers=headers, timeout=30)


def read_topic(kafka: LocalKafka, topic: str, expect: int) -> list[tuple[bytes | None, dict]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        enable_auto_commit=False,
    )
    out = []
    for message in consumer:
        out.append((message.key, registry().decode(message.value)))
        if len(out) >= expect:
            break
    consumer.close()
    return out


def test_json_lines_valid_records_are_produced_invalid_ones_explained(
    gateway: GatewayThread, kafka: LocalKafka, topic_prefix: str
) -> None:
    lines = [
        json.dumps(call("C-1"), ensure_ascii=False),
        json.dumps(call("C-2", line="110", received_at="2026-11-20 09:30", lat="north")),
        "{not json",
        json.dumps({"call_id": "C-3", "line": "12345", "text": "缺字段", "colour": "red"}, ensure_ascii=False),
        json.dumps(call("C-4", lat=31.1725, lon=121), ensure_ascii=False),
    ]
    response = post(gateway, "hotline.calls", "\n".join(lines), content_type="application/x-ndjson")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    statuses = [r["status"] for r in body["records"]]
    assert statuses == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    bad = {e["field"]: e["reason"] for e in body["records"][1]["errors"]}
    assert set(bad) == {"received_at", "lat"} and "offset" in bad["received_at"] and "number" in bad["lat"]
    assert "not JSON" in body["records"][2]["errors"][0]["reason"]
    fields = {e["field"]: e["reason"] for e in body["records"][3]["errors"]}
    assert fields == {
        "colour": "unknown field",
        "received_at": "missing required field",
        "caller": "missing required field",
    }

    produced = sorted(read_topic(kafka, f"{topic_prefix}.hotline.calls", expect=2), key=lambda kv: kv[0])
    assert [(k, name, rec["call_id"]) for k, (name, rec) in produced] == [
        (b"C-1", "hotline_call", "C-1"),
        (b"C-4", "hotline_call", "C-4"),
    ]
    assert produced[1][1][1]["lon"] == 121.0  # the worker's rule: an integer stands for a double


def test_one_object_and_a_json_array_and_semantic_rules(
    gateway: GatewayThread, kafka: LocalKafka, topic_prefix: str
) -> None:
    one = post(gateway, "hotline.calls", json.dumps(call("C-9")))
    assert one.status_code == 202 and one.json()["accepted"] == 1
    many = post(gateway, "hotline.calls", json.dumps([call("C-10"), call("C-11", line="12300")]))
    records = many.json()["records"]
    assert [r["status"] for r in records] == ["accepted", "rejected"]
    assert records[1]["errors"] == [
        {"field": "line", "reason": "field 'line' must be \"12345\" or \"12319\", got '12300'"}
    ]
    assert len(read_topic(kafka, f"{topic_prefix}.hotline.calls", expect=2)) == 2


def test_keys_and_scopes(gateway: GatewayThread) -> None:
    body = json.dumps(call("C-20"))
    assert post(gateway, "hotline.calls", body, key=None).status_code == 401
    unknown = requests.post(
        f"{gateway.url}/v1/feeds/hotline.calls",
        data=body,
        timeout=10,
        headers={"Authorization": "Bearer not-a-key-at-all-000"},
    )
    assert unknown.status_code == 401
    assert post(gateway, "hotline.calls", body, key="civic-app").status_code == 403
    bearer = requests.post(
        f"{gateway.url}/v1/feeds/hotline.calls",
        data=body,
        timeout=10,
        headers={"Authorization": f"Bearer {key_of('feeder')}"},
    )
    assert bearer.status_code == 202
    nowhere = post(gateway, "no.such.feed", body)
    assert nowhere.status_code == 404 and "feeds:" in nowhere.json()["error"]["reason"]
    actions = post(gateway, "case.actions", body)
    assert actions.status_code == 404 and "/v1/cases/" in actions.json()["error"]["reason"]


def test_size_limits_answer_413_and_produce_nothing(
    gateway: GatewayThread, kafka: LocalKafka, topic_prefix: str
) -> None:
    long_field = post(gateway, "hotline.calls", json.dumps([call("C-30"), call("C-31", text="吵" * 1001)]))
    assert long_field.status_code == 413 and "field 'text'" in long_field.json()["error"]["reason"]
    big_record = post(
        gateway,
        "hotline.calls",
        "\n".join(
            [json.dumps(call("C-32"))] * 2
            + [json.dumps(call("v" * 900, address="x" * 900, channel="y" * 900, text="z" * 900, caller="w" * 900))]
        ),
    )
    assert big_record.status_code == 413 and "record 2" in big_record.json()["error"]["reason"]
    huge = post(gateway, "hotline.calls", b"[" + b",".join([json.dumps(call("C-34")).encode()] * 20000) + b"]")
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]["reason"]
    consumer = KafkaConsumer(
        f"{topic_prefix}.hotline.calls",
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    assert list(consumer) == []
    consumer.close()


def test_rate_limit_answers_429_with_retry_after(gateway: GatewayThread) -> None:
    body = json.dumps(call("C-40"))
    answers = [post(gateway, "hotline.calls", body, key="slow") for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    assert "rate limit" in answers[2].json()["error"]["reason"]
    # other keys keep their own budget
    assert post(gateway, "hotline.calls", body).status_code == 202


async def test_batched_records_land_on_the_partition_a_plain_send_would_choose(
    kafka: LocalKafka, topic_prefix: str, gateway_settings
) -> None:
    """One producer batch per partition must not change where a key goes: a case's actions stay in one
    partition whoever produced them (the simulator keys by case id with kafka-python, the same murmur2)."""
    from aiokafka import AIOKafkaProducer

    from streams.gateway.producer import FeedProducer

    topic = f"{topic_prefix}.case.actions"
    keys = [f"XH0{i % 9}-20261120-{i:08x}".encode() for i in range(40)]
    ours = FeedProducer(gateway_settings)
    await ours.start()
    plain = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await plain.start()
    try:
        assert await ours.send_many([(topic, k, b"x") for k in keys]) == [None] * len(keys)
        expected = [(await (await plain.send(topic, b"y", key=k))).partition for k in keys]
    finally:
        await ours.stop()
        await plain.stop()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    placed = {m.key: m.partition for m in consumer if m.value == b"x"}
    consumer.close()
    assert [placed[k] for k in keys] == expected and len(set(expected)) > 1
