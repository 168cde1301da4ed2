"""``streams erase --caller NUMBER``: remove one caller's personal data (docs/security.md "Erasure").

1. The caller's pseudonyms are computed under every configured key (CITYGRID_PII_KEY and
   CITYGRID_PII_PREVIOUS_KEYS): the number itself is never stored, so it is the only way to find them.
2. ClickHouse: streams.storage.erasure (reports, triage records, the caller as an actor, dead letters
   whose sealed original holds the number).
3. The worker's case state: an erasure request goes to every partition of case.inputs; the lifecycle
   rewrites each case document that names the caller, so the compacted changelog drops the old ones.
Topics kept by time (raw feeds, case.inputs, case.events, dead-letter topics) age out by their retention.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from streams.bus import clients
from streams.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("erase", help="remove one caller's personal data from ClickHouse and the case state")
    p.add_argument("--caller", required=True, help="the caller's phone number, in any spelling")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed, change nothing")
    p.add_argument("--no-kafka", action="store_true", help="ClickHouse only (no erasure request to the worker)")
    p.set_defaults(func=cmd_erase)


def send_erasure_request(settings: Settings, pseudonyms: list[str], request_id: str) -> int:
    """One ``erase`` case input per partition of case.inputs (each lifecycle partition rewrites its own
    cases). Returns the number of partitions."""
    from kafka import KafkaProducer

    from streams.bus.codec import registry
    from streams.bus.topics import CASE_INPUTS, TopicNames

    topic = TopicNames(settings.topic_prefix).name(CASE_INPUTS)
    producer = KafkaProducer(**clients.operator_producer(settings))
    try:
        partitions = sorted(producer.partitions_for(topic) or [])
        value = registry().encode("case_input", {
            "kind": "erase", "signal": None, "tick_ms": None,
            "action": json.dumps({"request_id": request_id, "pseudonyms": pseudonyms})})
        for partition in partitions:
            producer.send(topic, value, partition=partition)
        producer.flush()
    finally:
        producer.close()
    return len(partitions)


def cmd_erase(args: argparse.Namespace) -> int:
    from streams.core.privacy import phone_digits
    from streams.security import dlq_sealer, pseudonymizer
    from streams.storage import store_from_settings
    from streams.storage.erasure import erase_caller

    settings = Settings()
    if settings.pii_key is None:
        print("streams erase: CITYGRID_PII_KEY is not set: a caller is found only by the pseudonyms their "
              "number makes under the deployment's keys", file=sys.stderr)
        return 1
    pseudonyms = pseudonymizer(settings).every_pseudonym(args.caller)
    digits = phone_digits(args.caller)
    sealer = dlq_sealer(settings) if settings.dlq_key is not None else None

    def open_original(text: str) -> bytes | None:
        from streams.bus.sealing import SealingError

        if sealer is None:
            return None
        try:
            return sealer.open(text.encode("ascii"))
        except (SealingError, UnicodeEncodeError):
            return None

    request_id = f"erase-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    with store_from_settings(settings) as store:
        report = erase_caller(store, pseudonyms, digits, open_original, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"caller pseudonyms: {', '.join(pseudonyms)}")
    for table, rows in sorted(report.rows.items()):
        print(f"clickhouse {table}: {verb} {rows} row(s)")
    if report.dead_letters_unreadable:
        print(f"clickhouse dead_letters: {report.dead_letters_unreadable} sealed row(s) no configured "
              "CITYGRID_DLQ_KEY opens (not searched)")
    if not args.dry_run and not args.no_kafka:
        partitions = send_erasure_request(settings, pseudonyms, request_id)
        print(f"case state: erasure request {request_id} sent to {partitions} partition(s) of case.inputs")
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0
