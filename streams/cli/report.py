"""``streams report --month YYYY-MM``: the monthly 考核报告 as one self-contained HTML page, and
``streams history --month YYYY-MM``: a simulated month of recorded events to replay (a sample report)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from streams.settings import Settings

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _month(text: str) -> str:
    if not _MONTH.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM")
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    from streams.wall import report

    p = subparsers.add_parser("report", help="the monthly assessment report 考核报告 (self-contained HTML)",
                              description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--month", required=True, type=_month, help="YYYY-MM, compared with the month before")
    p.add_argument("--store", help="store URL (chdb://PATH or clickhouse://host:port/db); default: settings")
    p.add_argument("--out", help="HTML file to write (default report-YYYY-MM.html; - for stdout)")
    p.set_defaults(func=run_report)
    h = subparsers.add_parser("history", help="write a simulated month of recorded events for streams replay")
    h.add_argument("--month", required=True, type=_month)
    h.add_argument("--out", required=True, help="JSON-lines file to write")
    h.add_argument("--seed", type=int, default=7)
    h.add_argument("--calls-per-day", type=int, default=12)
    h.add_argument("--reports-per-day", type=int, default=6)
    h.set_defaults(func=run_history)


def run_report(args: argparse.Namespace) -> int:
    from streams.core.knowledge.geo import City
    from streams.core.knowledge.knowledge import DATA_DIR
    from streams.storage import open_store
    from streams.wall import report

    settings = Settings()
    city = City.load(Path(settings.city_dir or DATA_DIR / "city") / "city.yaml")
    with open_store(args.store or settings.store_url) as store:
        page = report.build(store, args.month, city.district)
    if args.out == "-":
        sys.stdout.write(page)
        return 0
    out = Path(args.out or f"report-{args.month}.html")
    out.write_text(page, encoding="utf-8")
    print(f"streams report: wrote {out} ({len(page)} bytes)", file=sys.stderr)
    return 0


def run_history(args: argparse.Namespace) -> int:
    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources.history import write_month

    settings = Settings()
    knowledge = Knowledge.load(settings.kb_path, settings.city_dir)
    n = write_month(knowledge, args.month, args.out, seed=args.seed, calls_per_day=args.calls_per_day,
                    reports_per_day=args.reports_per_day, triage_confidence=settings.triage_confidence,
                    auto_dispatch=settings.auto_dispatch)
    print(f"streams history: wrote {n} lines to {args.out}; replay them with "
          f"streams replay {args.out} --until <the month's last instant>", file=sys.stderr)
    return 0
