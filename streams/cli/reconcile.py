"""``streams reconcile``: every input accounted for, every output against the case state."""
from __future__ import annotations

import argparse
import re
import sys
import time

from streams.core.times import BadTimestamp, iso_to_ms

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconcile", help="count what became of every input in a time range, and check the "
                                         "lifecycle's outputs against the case state (exit 1 on a difference)")
    p.add_argument("--since", help="start: ISO-8601 with offset, or epoch ms (default: --last before --until)")
    p.add_argument("--until", help="end: ISO-8601 with offset, or epoch ms (default: now)")
    p.add_argument("--last", default="1h", help="length of the range when --since is not given (30m, 2h, 1d)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_reconcile)


def instant_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return iso_to_ms(text)
    except BadTimestamp as exc:
        raise SystemExit(f"reconcile: {exc}") from None


def duration_ms(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise SystemExit(f"reconcile: not a duration: {text!r} (e.g. 30m, 2h, 1d)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def cmd_reconcile(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.sinks.reconcile import dumps, reconcile
    from streams.storage import store_from_settings

    settings = Settings()
    until = instant_ms(args.until) if args.until else int(time.time() * 1000)
    since = instant_ms(args.since) if args.since else until - duration_ms(args.last)
    store = store_from_settings(settings)
    try:
        result = reconcile(settings, store, since, until)
    finally:
        store.close()
    sys.stdout.write((dumps(result) if args.json else result.text()) + "\n")
    return 0 if result.ok else 1
