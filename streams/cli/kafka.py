"""``streams kafka fetch|start|stop``: the local development broker."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kafka", help="fetch, start or stop the local development broker")
    p.add_argument("action", choices=["fetch", "start", "stop"])
    p.add_argument("--data-dir", type=Path, default=Path("var/kafka"))
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_kafka)


def cmd_kafka(args: argparse.Namespace) -> int:
    from streams.local.kafka import LocalKafka, fetch_jars

    if args.action == "fetch":
        print(fetch_jars())
        return 0
    broker = LocalKafka(args.data_dir.resolve(), port=args.port)
    if args.action == "start":
        broker.start()
        print(f"kafka: ready on {broker.bootstrap} (data {broker.data_dir}, log {broker.log_file})")
    else:
        broker.stop()
        print("kafka: stopped")
    return 0
