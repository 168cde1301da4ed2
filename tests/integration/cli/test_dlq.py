"""``streams dlq show|reprocess`` on the real broker: dead-letter originals are sealed on the topic and
opened only with the key."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer

from streams.bus.codec import registry
from streams.bus.emit import Emitter
from streams.bus.sealing import DeadLetterSealer, generate_key
from streams.bus.topics import TopicNames
from streams.local.kafka import LocalKafka

pytestmark = pytest.mark.kafka

BAD_CALL = json.dumps({"call_id": "C9", "line": "99999", "caller": "13912345678",
                       "text": "回电13912345678"}, ensure_ascii=False).encode()
BINARY = b"\xc3\x01\xff\xfe garbage"


def write_dead_letters(kafka: LocalKafka, prefix: str, key: str) -> None:
    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            async def send(topic: str, k: bytes | None, value: bytes, partition: int | None):  # noqa: ANN202
                return await producer.send(topic, value, key=k, partition=partition)

            out = Emitter(send, registry(), TopicNames(prefix), {}, sealer=DeadLetterSealer([key]))
            out.dead_letter("hotline.calls", 0, 7, "field 'line' must be \"12345\" or \"12319\"", 1_800_000_000_000,
                            BAD_CALL, b"13912345678")
            out.dead_letter("iot.readings", 1, 3, "not single-object Avro", 1_800_000_000_500, BINARY, None)
            await out.flush()
        finally:
            await producer.stop()

    asyncio.run(main())


def streams_dlq(kafka: LocalKafka, prefix: str, *args: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
    env.update({"CITYGRID_KAFKA_BOOTSTRAP": kafka.bootstrap, "CITYGRID_TOPIC_PREFIX": prefix})
    if key is not None:
        env["CITYGRID_DLQ_KEY"] = key
    return subprocess.run([sys.executable, "-m", "streams.cli", "dlq", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def raw_values(kafka: LocalKafka, topic: str, expect: int) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=15000, enable_auto_commit=False)
    out = []
    for message in consumer:
        out.append((message.key, message.value))
        if len(out) >= expect:
            break
    consumer.close()
    return out


def test_show_opens_what_the_topic_holds_sealed(kafka: LocalKafka, topic_prefix: str, tmp_path: Path) -> None:
    key = generate_key()
    write_dead_letters(kafka, topic_prefix, key)
    [(msg_key, value)] = raw_values(kafka, f"{topic_prefix}.hotline.calls.dlq", 1)
    assert msg_key is None and b"13912345678" not in value, "the dead-letter topic holds the number in clear"

    shown = streams_dlq(kafka, topic_prefix, "show", key=key)
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    by_topic = {line["topic"]: line for line in lines}
    call = by_topic["hotline.calls"]
    assert call["original"] == BAD_CALL.decode() and call["key"] == "13912345678"
    assert call["sealed"] is True and call["offset"] == 7
    assert by_topic["iot.readings"]["original"].startswith("base64:")
    only = streams_dlq(kafka, topic_prefix, "show", "--topic", "iot.readings", key=key)
    assert [json.loads(line)["topic"] for line in only.stdout.splitlines()] == ["iot.readings"]

    missing = streams_dlq(kafka, topic_prefix, "show", key=None)
    assert missing.returncode == 1 and "set CITYGRID_DLQ_KEY" in missing.stderr
    wrong = streams_dlq(kafka, topic_prefix, "show", key=generate_key())
    assert wrong.returncode == 1 and "no configured dead-letter key opens" in wrong.stderr
    rotated = streams_dlq(kafka, topic_prefix, "show", key=f"{generate_key()},{key}")
    assert rotated.returncode == 0 and len(rotated.stdout.splitlines()) == 2


def test_reprocess_sends_the_original_back_to_its_topic(kafka: LocalKafka, topic_prefix: str) -> None:
    key = generate_key()
    write_dead_letters(kafka, topic_prefix, key)
    dry = streams_dlq(kafka, topic_prefix, "reprocess", "--topic", "hotline.calls", "--dry-run", key=key)
    assert dry.returncode == 0 and "would reprocess 1 record(s)" in dry.stderr
    done = streams_dlq(kafka, topic_prefix, "reprocess", "--topic", "hotline.calls", "--offset", "7", key=key)
    assert done.returncode == 0, done.stderr
    assert raw_values(kafka, f"{topic_prefix}.hotline.calls", 1) == [(b"13912345678", BAD_CALL)]
    unknown = streams_dlq(kafka, topic_prefix, "show", "--topic", "nope", key=key)
    assert unknown.returncode != 0 and "has no dead-letter topic" in unknown.stderr
