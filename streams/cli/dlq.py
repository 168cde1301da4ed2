"""``streams dlq show|reprocess``: read the dead-letter topics, opening the sealed originals with the
key (``CITYGRID_DLQ_KEY``; docs/security.md).

``show`` prints one JSON line per dead-lettered record: where it came from, why it failed, and the
original (UTF-8 text, or ``base64:`` when it is not text). ``reprocess`` produces the opened
originals back to the topic they came from (with their original key), after the cause is fixed;
the worker then reads them as new records. Neither changes the dead-letter topic: running
``reprocess`` twice sends twice (narrow it with ``--since-ms`` / ``--offset``).
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streams.bus import clients
from streams.settings import Settings


@dataclass
class DeadLetter:
    dlq_topic: str            # logical dead-letter topic
    dlq_partition: int
    dlq_offset: int
    record: dict[str, Any]    # the decoded dead_letter record, original and key opened
    sealed: bool              # False for records written before sealing (kept as they were)

    def as_json(self) -> dict[str, Any]:
        rec = self.record
        return {"dlq": self.dlq_topic, "dlq_partition": self.dlq_partition, "dlq_offset": self.dlq_offset,
                "topic": rec["topic"], "partition": rec["partition"], "offset": rec["offset"],
                "reason": rec["reason"], "ts_ms": rec["ts_ms"], "sealed": self.sealed,
                "original": _text(rec["original"]), "key": _text(rec.get("key"))}


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode("ascii")


def dead_letter_topics(only: str | None = None) -> list[str]:
    """Logical dead-letter topics carrying ``dead_letter`` records (raw feeds and case.inputs)."""
    from streams.bus.topics import CASE_INPUTS, RAW_SCHEMAS, dlq

    topics = [dlq(t) for t in RAW_SCHEMAS] + [dlq(CASE_INPUTS)]
    if only is None:
        return topics
    wanted = only if only.endswith(".dlq") else dlq(only)
    if wanted not in topics:
        raise SystemExit(f"streams dlq: {only!r} has no dead-letter topic; one of: "
                         + ", ".join(t[:-4] for t in topics))
    return [wanted]


def read_dead_letters(settings: Settings, topics: list[str], timeout_s: float = 60.0) -> Iterator[DeadLetter]:
    """Every record now in the dead-letter topics, from the beginning to the current end (no group)."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.bus.codec import registry
    from streams.bus.sealing import looks_sealed
    from streams.bus.topics import TopicNames
    from streams.security import dlq_sealer

    names = TopicNames(settings.topic_prefix)
    sealer = dlq_sealer(settings) if settings.dlq_key is not None else None
    consumer = KafkaConsumer(**clients.dead_letter_reader(settings))
    try:
        existing = consumer.topics()
        tps = [TopicPartition(names.name(t), p) for t in topics if names.name(t) in existing
               for p in sorted(consumer.partitions_for_topic(names.name(t)) or [])]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise SystemExit(f"streams dlq: reading the dead-letter topics took longer than {timeout_s}s")
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    _, record = registry().decode(message.value, expected="dead_letter")
                    sealed = looks_sealed(record["original"])
                    if sealed:
                        if sealer is None:
                            raise SystemExit("streams dlq: the originals are sealed; set CITYGRID_DLQ_KEY to open them")
                        record["original"] = sealer.open(record["original"])
                        if record.get("key") is not None:
                            record["key"] = sealer.open(record["key"])
                    yield DeadLetter(names.logical(tp.topic), tp.partition, message.offset, record, sealed)
    finally:
        consumer.close()


def _selected(letters: Iterator[DeadLetter], since_ms: int | None, offsets: set[int] | None) -> Iterator[DeadLetter]:
    for letter in letters:
        if since_ms is not None and letter.record["ts_ms"] < since_ms:
            continue
        if offsets is not None and letter.record["offset"] not in offsets:
            continue
        yield letter


def cmd_show(args: argparse.Namespace) -> int:
    from streams.bus.sealing import SealingError

    settings = Settings()
    shown = 0
    try:
        for letter in _selected(read_dead_letters(settings, dead_letter_topics(args.topic)), args.since_ms,
                                set(args.offset) if args.offset else None):
            print(json.dumps(letter.as_json(), ensure_ascii=False), flush=True)
            shown += 1
            if args.limit and shown >= args.limit:
                break
    except SealingError as exc:
        print(f"streams dlq: {exc}", file=sys.stderr)
        return 1
    print(f"{shown} dead-lettered record(s)", file=sys.stderr)
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from streams.bus.sealing import SealingError
    from streams.bus.topics import TopicNames

    settings = Settings()
    names = TopicNames(settings.topic_prefix)
    try:
        chosen = list(_selected(read_dead_letters(settings, dead_letter_topics(args.topic)), args.since_ms,
                                set(args.offset) if args.offset else None))
    except SealingError as exc:
        print(f"streams dlq: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        for letter in chosen:
            print(json.dumps(letter.as_json(), ensure_ascii=False))
        print(f"would reprocess {len(chosen)} record(s)", file=sys.stderr)
        return 0
    producer = KafkaProducer(**clients.operator_producer(settings))
    try:
        for letter in chosen:   # in dead-letter order: a topic's records keep their relative order
            producer.send(names.name(letter.record["topic"]), bytes(letter.record["original"]),
                          key=bytes(letter.record["key"]) if letter.record.get("key") is not None else None)
        producer.flush()
    finally:
        producer.close()
    print(f"reprocessed {len(chosen)} record(s)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="show or reprocess dead-lettered records (sealed originals opened with "
                                   "CITYGRID_DLQ_KEY)")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    for name, func, help_text in (
            ("show", cmd_show, "print the dead-lettered records as JSON lines, originals opened"),
            ("reprocess", cmd_reprocess, "produce the opened originals back to their topics")):
        q = dsub.add_parser(name, help=help_text)
        q.add_argument("--topic", help="one raw topic (e.g. hotline.calls); default: every dead-letter topic")
        q.add_argument("--since-ms", type=int, help="only records dead-lettered at or after this epoch ms")
        q.add_argument("--offset", type=int, action="append", help="only the record(s) at this source offset")
        if name == "show":
            q.add_argument("--limit", type=int, default=0, help="stop after this many")
        else:
            q.add_argument("--dry-run", action="store_true", help="print what would be reprocessed")
        q.set_defaults(func=func)
