"""``streams replay FILE``: the same core over recorded events, event-time order, virtual clock, no Kafka."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.core.times import iso_to_ms
from streams.replay import __doc__ as REPLAY_DOC
from streams.replay import replay
from streams.settings import Settings


def _run(args: argparse.Namespace) -> int:
    settings = Settings(kb_path=Path(args.kb)) if args.kb else Settings()
    store = None
    if not args.no_store:
        from streams.storage import store_from_settings

        store = store_from_settings(settings.model_copy(update={"store_url": args.store}) if args.store else settings)
        store.migrate()
    until = iso_to_ms(args.until) if args.until else None
    source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    try:
        report = replay(source, settings, store, sys.stdout if args.json else None, until_ms=until)
    finally:
        if source is not sys.stdin:
            source.close()
        if store is not None:
            store.close()
    print(report.summary(), file=sys.stderr)
    return 1 if report.invalid else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("replay", help="run the lifecycle over recorded events (event time, virtual clock)",
                                   description=REPLAY_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help='JSON lines {"topic": ..., "value": {...}}; - for stdin')
    parser.add_argument("--json", action="store_true", help="print one JSON line per case on stdout")
    parser.add_argument("--store", help="store URL (chdb://PATH or clickhouse://host:port/db); default: settings")
    parser.add_argument("--no-store", action="store_true", help="write no rows (with --json: a dry backtest)")
    parser.add_argument("--kb", help="knowledge-base YAML to backtest instead of the configured one")
    parser.add_argument("--until", help="ISO-8601 instant to run the virtual clock to at the end (fires timers)")
    parser.set_defaults(func=_run)
