"""``streams replay FILE``: the same core over recorded events, event-time order, virtual clock, no Kafka."""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from streams.core.times import iso_to_ms
from streams.replay import __doc__ as REPLAY_DOC
from streams.replay import replay
from streams.settings import Settings


def _diff(args: argparse.Namespace) -> int:
    """--diff: replay under the base and the new KB, print what would change."""
    from streams.core.knowledge.knowledge import Knowledge
    from streams.core.knowledge.taxonomy import DataError
    from streams.kbdiff import format_diff, replay_diff

    settings = Settings()
    try:
        base = Knowledge.load(args.base_kb or settings.kb_path, settings.city_dir)
        new = Knowledge.load(args.kb, settings.city_dir)
    except DataError as exc:
        print(f"streams replay: knowledge base not usable: {exc}", file=sys.stderr)
        return 2
    until = iso_to_ms(args.until) if args.until else None
    source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    try:
        diff = replay_diff(source, settings, base, new, until_ms=until, err=io.StringIO())
    finally:
        if source is not sys.stdin:
            source.close()
    if args.json:
        print(json.dumps(diff.to_dict(), ensure_ascii=False))
    else:
        print(format_diff(diff, args.examples))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.diff:
        if not args.kb:
            print("streams replay: --diff needs --kb NEW (the knowledge base to compare)", file=sys.stderr)
            return 2
        return _diff(args)
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
    parser.add_argument("--diff", action="store_true",
                        help="with --kb NEW: replay under the current and the new KB (no store) and report the cases "
                             "whose category, departments, level, deadlines or lights would change, by rule")
    parser.add_argument("--base-kb", help="with --diff: the KB to compare against (default: the configured one)")
    parser.add_argument("--examples", type=int, default=5, metavar="N",
                        help="with --diff: how many changed cases to show (default 5; --json lists all)")
    parser.set_defaults(func=_run)
