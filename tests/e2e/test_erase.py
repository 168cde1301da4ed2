"""``streams erase --caller NUMBER`` against the real worker (clickhouse-server store, real broker): the
caller's reports leave ClickHouse, and the worker rewrites every case document that named them, so the
latest record of each case in the compacted changelog no longer holds their pseudonym."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.agents.casestate import HEADER_END, LOG_DOC
from streams.bus.topics import CASE_STATE, TopicNames
from streams.core.privacy import Pseudonymizer, PseudonymKey
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import produce, query, wait_rows, wait_until
from tests.fixtures.worker import TEST_SECRETS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]

CALLER = "13912345678"
OTHER = "13800000000"
PSEUDONYM = Pseudonymizer(PseudonymKey.from_secret(TEST_SECRETS["CITYGRID_PII_KEY"])).caller(CALLER)


def call(call_id: str, caller: str, place: str) -> dict[str, Any]:
    return {"call_id": call_id, "line": "12345", "received_at": "2026-11-23T10:00:00+08:00", "caller": caller,
            "text": f"{place}楼下饭店油烟直排，呛得人受不了", "address": place}


def latest_case_documents(bootstrap: str, topic: str) -> dict[str, str]:
    """case id -> the latest changelog value (JSON text), what compaction keeps: the Faust cases table's
    changelog, or the lean case path's case.state (documents keyed ``c:<case id>``, after their header)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)   # up to here: the worker keeps writing (its clock's checkpoints)
    latest: dict[str, str] = {}
    lean = topic.endswith(".case.state")
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=1000).values():
            for message in messages:
                if message.offset >= end[TopicPartition(message.topic, message.partition)]:
                    continue
                if message.key is None or (lean and not message.key.startswith(LOG_DOC)):
                    continue
                value = message.value or b""
                if lean:
                    value = value.partition(HEADER_END)[2]
                latest[message.key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    consumer.close()
    return latest


@pytest.mark.parametrize("case_path", ["lean", "faust"])
def test_erase_removes_a_caller_from_clickhouse_and_from_the_case_state(
        kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory, case_path: str) -> None:
    store_url = store_url_factory("server")
    produce(kafka.bootstrap, topic_prefix, [
        ("hotline.calls", call("ER-1", CALLER, "钦江路101号")),       # the caller opens a case
        ("hotline.calls", call("ER-2", OTHER, "钦江路101号")),        # someone else reports the same problem
        ("hotline.calls", call("ER-3", CALLER, "斜土路1221号")),      # the caller's second case
    ])
    worker = worker_factory(store_url, case_path=case_path)
    wait_rows(worker, signals=3, dispatches=2)
    changelog = (f"citygrid-{topic_prefix}-cases-changelog" if case_path == "faust"
                 else TopicNames(topic_prefix).name(CASE_STATE))
    assert any(PSEUDONYM in doc for doc in latest_case_documents(kafka.bootstrap, changelog).values())

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
    env.update(TEST_SECRETS, CITYGRID_KAFKA_BOOTSTRAP=kafka.bootstrap, CITYGRID_TOPIC_PREFIX=topic_prefix,
               CITYGRID_STORE_URL=store_url)
    erase = subprocess.run([sys.executable, "-m", "streams.cli", "erase", "--caller", "+86 139-1234-5678"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert erase.returncode == 0, erase.stdout + erase.stderr
    assert "clickhouse signals: removed 2 row(s)" in erase.stdout, erase.stdout
    assert "erasure request" in erase.stdout and "partition(s) of case.inputs" in erase.stdout

    reporters = {r["reporter_id"] for r in query(store_url, "SELECT reporter_id FROM signals FINAL")}
    assert PSEUDONYM not in reporters and len(reporters) == 1
    actors = {r["actor_id"] for r in query(store_url, "SELECT actor_id FROM case_transitions FINAL")}
    assert PSEUDONYM not in actors

    def rewritten() -> bool:
        docs = latest_case_documents(kafka.bootstrap, changelog)
        return bool(docs) and not any(PSEUDONYM in doc for doc in docs.values())

    wait_until(rewritten, 60, "the case documents rewritten without the caller", worker.tail)
    docs = [json.loads(d) for d in latest_case_documents(kafka.bootstrap, changelog).values() if d]
    assert sum(doc["reporters"] for doc in docs) == 3, "the cases keep their reporters, anonymously"
