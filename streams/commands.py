"""Sub-commands: worker, simulate, kafka, demo, live."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streams.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the stream-processing worker (Faust agents + lean consumers + sink)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("simulate", help="produce simulated city feeds to Kafka")
    p.add_argument("--rate", type=float, default=20.0, help="records per second (default 20)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--count", type=int, default=None, help="stop after this many records")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sources", default="hotline,field,iot,camera,registry",
                   help="comma-separated: hotline,field,iot,camera,registry")
    p.add_argument("--act", action="store_true",
                   help="also play the departments and verifiers (handled, verify, close) so cases close")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("kafka", help="fetch, start or stop the local development broker")
    p.add_argument("action", choices=["fetch", "start", "stop"])
    p.add_argument("--data-dir", type=Path, default=Path("var/kafka"))
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("demo", help="local Kafka + embedded chdb + worker + simulated feeds + live view")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--dir", type=Path, default=Path("var/demo"))
    p.add_argument("--seconds", type=float, default=None, help="stop by itself after this long (default: Ctrl-C)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("live", help="terminal live view of a running worker")
    p.add_argument("--url", default=None, help="worker web URL (default http://127.0.0.1:$CITYGRID_WEB_PORT)")
    p.set_defaults(func=cmd_live)


def build_worker(settings: Settings) -> Any:
    """The Faust worker with every service of the pipeline, ready to ``execute_from_commandline()``."""
    import faust

    from streams.agents.app import Pipeline
    from streams.agents.lean import ClickHouseSink, LeanIngest
    from streams.agents.services import ConsumerLagService, GaugeService, WebhookService
    from streams.agents.web import register_views
    from streams.metrics import start_metrics_server
    from streams.storage import open_store

    store = open_store(settings.store_url)
    store.migrate()
    pipeline = Pipeline(settings)
    register_views(pipeline, store)
    start_metrics_server(settings.metrics_port, pipeline.metrics)
    services: list[Any] = [
        LeanIngest(settings, pipeline.ingestor, pipeline.codec, pipeline.metrics, pipeline.emit_ingest_result),
        ClickHouseSink(settings, store, pipeline.codec, pipeline.metrics),
    ]
    services += [GaugeService(pipeline), ConsumerLagService(settings, pipeline.metrics)]
    if settings.webhooks_file:
        services.append(WebhookService(settings, pipeline.metrics, store))
    return faust.Worker(pipeline.app, *services, loglevel=settings.log_level, redirect_stdouts=False)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    settings = Settings()
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python (admin, lag probe) chatter
    _ensure_topics(settings)
    worker = build_worker(settings)
    worker.execute_from_commandline()
    return 0


def _ensure_topics(settings: Settings) -> None:
    """Every topic of the pipeline, with the configured partitions."""
    from streams.local.kafka import create_topics
    from streams.topics import TopicNames

    create_topics(settings.kafka_bootstrap, TopicNames(settings.topic_prefix).all(), settings.topic_partitions)


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams import simulate
    from streams.core.knowledge import Knowledge

    settings = Settings()
    sources = {s.strip() for s in args.sources.split(",") if s.strip()}
    sent = simulate.run(settings.kafka_bootstrap, args.rate, args.duration, args.seed, sources,
                        Knowledge.load(settings), settings.topic_prefix, args.count, act=args.act)
    print(f"simulate: produced {sent} records", file=sys.stderr)
    return 0


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


def cmd_live(args: argparse.Namespace) -> int:
    from streams.live import run_live

    settings = Settings()
    url = args.url or f"http://127.0.0.1:{settings.web_port}"
    try:
        run_live(url)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on one machine; Ctrl-C stops everything this command started."""
    from streams.live import run_live
    from streams.local.kafka import LocalKafka, free_port

    base = args.dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(base / "kafka")
    children: list[subprocess.Popen] = []
    stopping = False

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        broker.stop()

    # Ctrl-C (SIGINT) and SIGTERM both stop everything; SIGINT is set explicitly because a shell
    # starts background jobs with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"demo: starting Kafka in {broker.data_dir} ...", flush=True)
        broker.start()
        web_port, metrics_port = free_port(), free_port()
        env = {**os.environ,
               "CITYGRID_KAFKA_BOOTSTRAP": broker.bootstrap,
               "CITYGRID_STORE_URL": f"chdb://{base / 'chdb'}",
               "CITYGRID_DATA_DIR": str(base / "worker"),
               "CITYGRID_WEB_PORT": str(web_port),
               "CITYGRID_METRICS_PORT": str(metrics_port),
               "CITYGRID_LOG_LEVEL": "warning"}
        streams_cmd = [sys.executable, "-m", "streams.cli"]
        worker_log = open(base / "worker.log", "ab")
        _ensure_topics(Settings(kafka_bootstrap=broker.bootstrap))
        children.append(subprocess.Popen([*streams_cmd, "worker"], env=env, stdout=worker_log,
                                         stderr=subprocess.STDOUT, start_new_session=True))
        sim_log = open(base / "simulate.log", "ab")
        children.append(subprocess.Popen([*streams_cmd, "simulate", "--act", "--rate", str(args.rate)], env=env,
                                         stdout=sim_log, stderr=subprocess.STDOUT, start_new_session=True))
        print(f"demo: worker (log {base / 'worker.log'}), simulator at {args.rate}/s; "
              f"metrics http://127.0.0.1:{metrics_port}/metrics; Ctrl-C stops everything", flush=True)
        run_live(f"http://127.0.0.1:{web_port}", seconds=args.seconds, children=children)
    except KeyboardInterrupt:
        pass
    finally:
        print("\ndemo: stopping ...", flush=True)
        stop_all()
        print("demo: stopped", flush=True)
    return 0
