"""``streams worker``: the stream-processing worker."""
from __future__ import annotations

import argparse

from streams.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run the stream-processing worker (Faust agents + lean consumers + sink)")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from streams.agents.worker import build_worker, ensure_topics
    from streams.security import require_worker_secrets

    settings = Settings()
    require_worker_secrets(settings)   # before touching Kafka: a clear message, exit status 1
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python (admin, lag probe) chatter
    ensure_topics(settings)
    worker = build_worker(settings)
    worker.execute_from_commandline()
    return 0
