"""The ``streams`` command. Each area registers its own sub-commands (``register(subparsers)``)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands; each exposes register(subparsers) -> None.
COMMAND_MODULES = [
    "streams.cli.worker",          # worker
    "streams.cli.simulate",        # simulate
    "streams.cli.kafka",           # kafka fetch|start|stop
    "streams.cli.demo",            # demo, live
    "streams.cli.classify",     # classify
    "streams.cli.replay",        # replay
    "streams.cli.storage",       # migrate
    "streams.cli.webhooks",      # webhooks redeliver
    "streams.cli.schemas",       # schemas check|freeze
    "streams.cli.reconcile",     # reconcile
    "streams.cli.dlq",           # dlq show|reprocess
    "streams.cli.erase",         # erase --caller
    "streams.cli.gateway",       # gateway
    "streams.cli.report",        # report, history
    "streams.cli.city",          # city generate
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streams", description="citygrid-streams: the city operations pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area is not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
