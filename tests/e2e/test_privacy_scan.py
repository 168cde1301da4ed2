"""No personal data in clear at rest: calls carrying phone and 身份证 numbers (good records and malformed
ones) go through the real worker on the real broker; afterwards every String column of every ClickHouse
table, every record of every topic the pipeline writes (dead-letter topics included), the webhook bodies
a department received and the worker's log are scanned for those numbers in any spelling: none is found.
The masked forms (138****5678) are there, so the scan is looking at the right data."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer

from streams.bus.topics import RAW_SCHEMAS, TopicNames
from streams.local.kafka import LocalKafka
from streams.storage import open_store
from tests.e2e.helpers import WebhookReceiver, produce, wait_rows, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CALLER = "13912345678"                 # the caller's own number (the caller field)
MOBILE = "13687654321"                 # typed into a complaint
SPACED = "150 2468 1357"               # typed with spaces
LANDLINE = "021-64871234"
ID_NUMBER = "310104198001011234"
ID_X = "31010419900202567X"
SHORT = "1391234567"                   # a mistyped (10-digit) mobile
PERSONAL = [CALLER, MOBILE, SPACED, LANDLINE, ID_NUMBER, ID_X, SHORT]
SECRET = "privacy-scan-webhook-secret-01"
WHEN = "2026-11-23T10:00:00+08:00"
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


def digits(text: str) -> str:
    return re.sub(r"[^0-9Xx]", "", text.translate(_FULLWIDTH)).upper()


# A number counts as present when its digits appear as one run, whatever separators were put inside.
_RUN = re.compile(r"[0-9０-９](?:[ \-‐－.]?[0-9０-９Xx])+")


def leaks(text: str) -> list[str]:
    runs = [digits(m.group()) for m in _RUN.finditer(text)]
    return [number for number in PERSONAL if any(digits(number) in run for run in runs)]


def call(call_id: str, text: str, address: str | None = None, caller: str = CALLER, line: str = "12345") -> dict:
    record = {"call_id": call_id, "line": line, "received_at": WHEN, "caller": caller, "text": text}
    if address:
        record["address"] = address
    return record


RECORDS: list[tuple[str, Any]] = [
    # good calls: a case (and a dispatch to 城管执法中队, who has a webhook endpoint)
    ("hotline.calls", call("PV-1", f"钦江路101号楼下饭店油烟直排，呛得人受不了，我的电话{MOBILE}，身份证{ID_NUMBER}",
                           "钦江路101号")),
    ("hotline.calls", call("PV-2", f"斜土路1221号楼下饭店油烟直排，呛得人受不了，回电{SPACED}", "斜土路1221号",
                           caller=f"+86 {CALLER[:3]}-{CALLER[3:7]}-{CALLER[7:]}")),
    # manual triage: low confidence, unknown place (the address carries a landline)
    ("hotline.calls", call("PV-3", f"你好，我想问一下今天天气怎么样，号码{SHORT}错了一位", "钦江路101号")),
    ("hotline.calls", call("PV-4", f"南京东路1号门口占道经营，联系电话{LANDLINE}", f"南京东路1号 座机{LANDLINE}")),
    # malformed: wrong line (schema rule), empty text (unusable), not JSON at all -> dead letters
    ("hotline.calls", call("PV-5", f"身份证{ID_X}", "钦江路101号", line="99999")),
    ("hotline.calls", call("PV-6", "   ", caller=CALLER)),
    ("hotline.calls", f"caller={CALLER} text=手机{MOBILE}".encode()),
    # an inspector's report whose text quotes a resident's number
    ("field.reports", {"report_id": "PV-R1", "reporter_id": "INS-042", "reporter_kind": "inspector",
                       "reported_at": WHEN, "category": "暴露垃圾", "address": "宜山路455号",
                       "text": f"宜山路455号垃圾堆积，居民{MOBILE}反映多次", "photos": ["s3://citygrid/p/1.jpg"]}),
]


def actions() -> list[tuple[str, Any]]:
    """The department reports PV-1's case handled, quoting the caller's number in its note; someone who may
    not act on the case tries too (refused: case.actions.rejected keeps the note, masked)."""
    base = {"ts": "2026-11-23T11:00:00+08:00", "source_id": "PV-1", "photos": None, "extend_minutes": None,
            "departments": None, "case_id": None}
    return [("case.actions", {**base, "action_id": "PV-A1", "actor_kind": "department", "actor_id": "城管执法中队",
                              "action": "handled", "note": f"已电话联系{MOBILE}，油烟已整改"}),
            ("case.actions", {**base, "action_id": "PV-A2", "actor_kind": "station", "actor_id": "STA-9",
                              "action": "close", "note": f"我是{CALLER}的邻居"})]


def string_cells(store_url: str) -> Iterable[tuple[str, str]]:
    """(table.column, value) for every String-typed cell of every table of the pipeline's database."""
    store = open_store(store_url)
    try:
        columns = store.query("SELECT table, name, type FROM system.columns WHERE database = %(db)s "
                              "ORDER BY table, name", {"db": store.database})
        for col in columns:
            if "String" not in col["type"]:
                continue
            for row in store.query(f"SELECT {col['name']} AS v FROM {col['table']}"):
                values = row["v"] if isinstance(row["v"], list) else [row["v"]]
                for value in values:
                    if isinstance(value, str) and value:
                        yield f"{col['table']}.{col['name']}", value
    finally:
        store.close()


def topic_texts(bootstrap: str, prefix: str) -> Iterable[tuple[str, str]]:
    """(topic, text) of every record of every topic under the prefix but the raw input feeds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        raw = {TopicNames(prefix).name(t) for t in RAW_SCHEMAS}
        topics = sorted(t for t in consumer.topics() if t.startswith(prefix + ".") and t not in raw)
        consumer.subscribe(topics)
        for message in consumer:
            for part in (message.key, message.value):
                if part:
                    yield message.topic, part.decode("utf-8", errors="ignore")
    finally:
        consumer.close()


def test_no_phone_or_id_number_in_clear_anywhere(kafka: LocalKafka, topic_prefix: str, worker_factory,
                                                 store_url_factory, tmp_path: Path) -> None:
    store_url = store_url_factory("chdb")
    with WebhookReceiver() as receiver:
        hooks = tmp_path / "webhooks.yaml"
        hooks.write_text(yaml.safe_dump({"endpoints": {"城管执法中队": {
            "url": receiver.url(), "secret": SECRET}}}, allow_unicode=True),
            encoding="utf-8")
        produce(kafka.bootstrap, topic_prefix, RECORDS)
        worker = worker_factory(store_url, webhooks_file=str(hooks))
        wait_rows(worker, timeout=300, signals=3, triage=2, dead_letters=3, dispatches=2)
        produce(kafka.bootstrap, topic_prefix, actions())
        wait_rows(worker, timeout=300, case_transitions=10)   # discover, register, dispatch for 3 cases + handled
        wait_until(lambda: len(receiver.bodies) >= 2, 60, "webhooks to 城管执法中队", worker.tail)
        worker.stop()   # the sink flushed and closed its store: ClickHouse is complete and free to open

    found: dict[str, list[str]] = {}
    masked_seen = set()
    cells = list(string_cells(store_url))
    texts = [*cells, *topic_texts(kafka.bootstrap, topic_prefix),
             *(("webhook body", b) for b in receiver.bodies), ("worker log", worker.tail(100_000))]
    for where, text in texts:
        for number in leaks(text):
            found.setdefault(where, []).append(number)
        masked_seen.update(m for m in ("136****4321", "150 **** 1357", "021-****1234", "310***********1234",
                                       "139***4567") if m in text)
    assert not found, f"personal numbers in clear: {found}"
    # the scan saw the data it was meant to see: the masked numbers are stored, in every kind of place
    tables = {where.split(".")[0] for where, _ in cells}
    assert {"signals", "cases", "triage", "dead_letters", "case_transitions"} <= tables
    assert {"136****4321", "150 **** 1357", "021-****1234", "139***4567"} <= masked_seen, masked_seen
    assert any(json.loads(b)["kind"] == "dispatch" for b in receiver.bodies)
