"""``streams simulate``: simulated city feeds."""
from __future__ import annotations

import argparse
import sys

from streams.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="produce simulated city feeds to Kafka")
    p.add_argument("--rate", type=float, default=20.0, help="records per second (default 20)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--count", type=int, default=None, help="stop after this many records")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sources", default="hotline,field,iot,camera,registry",
                   help="comma-separated: hotline,field,iot,camera,registry")
    p.add_argument("--malformed", type=float, default=0.005,
                   help="share of records that fail their schema, as real feeds have (default 0.005)")
    p.add_argument("--act", action="store_true",
                   help="also play the departments and verifiers (handled, verify, close) so cases close")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources import simulate

    settings = Settings()
    sources = {s.strip() for s in args.sources.split(",") if s.strip()}
    sent = simulate.run(settings, args.rate, args.duration, args.seed, sources,
                        Knowledge.load(settings.kb_path, settings.city_dir), args.count, act=args.act,
                        malformed=args.malformed)
    print(f"simulate: produced {sent} records", file=sys.stderr)
    return 0
