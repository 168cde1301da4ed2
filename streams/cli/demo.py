"""``streams demo`` and ``streams live``: everything on one machine, and the live view."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from streams.settings import REPO_DIR, Settings

DEMO_KEYS = REPO_DIR / "deploy" / "local" / "gateway-keys.yaml"   # local demo only (README curl examples)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="local Kafka + embedded chdb + worker + simulated feeds + live view")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--dir", type=Path, default=Path("var/demo"))
    p.add_argument("--seconds", type=float, default=None, help="stop by itself after this long (default: Ctrl-C)")
    p.add_argument("--gateway-port", type=int, default=None,
                   help="port of the HTTP gateway (default CITYGRID_GATEWAY_PORT, 8080; a free one if that is taken)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("live", help="terminal live view of a running worker")
    p.add_argument("--url", default=None, help="worker web URL (default http://127.0.0.1:$CITYGRID_WEB_PORT)")
    p.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    from streams.wall.live import run_live

    settings = Settings()
    url = args.url or f"http://127.0.0.1:{settings.web_port}"
    try:
        token = settings.wall_token.get_secret_value() if settings.wall_token else None
        run_live(url, token=token)
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the demo the way Ctrl-C does."""
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on one machine; Ctrl-C stops everything this command started."""
    from streams.agents.worker import ensure_topics
    from streams.local.kafka import LocalKafka, free_port, port_open
    from streams.wall.live import run_live

    base = args.dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(base / "kafka")
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all() -> None:
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
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"demo: starting Kafka in {broker.data_dir} ...", flush=True)
        broker.start()
        web_port, metrics_port = free_port(), free_port()
        gateway_port = args.gateway_port or Settings().gateway_port
        if port_open("127.0.0.1", gateway_port):
            gateway_port = free_port()
        from streams.security import demo_secrets

        env = {**os.environ, **demo_secrets(base / "keys"),   # generated once, kept for the next demo
               "CITYGRID_KAFKA_BOOTSTRAP": broker.bootstrap,
               "CITYGRID_STORE_URL": f"chdb://{base / 'chdb'}",
               "CITYGRID_DATA_DIR": str(base / "worker"),
               "CITYGRID_WEB_PORT": str(web_port),
               "CITYGRID_METRICS_PORT": str(metrics_port),
               "CITYGRID_LOG_LEVEL": "warning",
               # one local broker: one replica of everything (production keeps the defaults, 3 and 2)
               "CITYGRID_TOPIC_REPLICATION_FACTOR": "1",
               "CITYGRID_TOPIC_MIN_INSYNC_REPLICAS": "1",
               # the HTTP gateway runs inside the worker: the embedded chdb store is held by one process
               "CITYGRID_GATEWAY_IN_WORKER": "true",
               "CITYGRID_GATEWAY_PORT": str(gateway_port)}
        # the demo keys live in the checkout (deploy/local/); from an installed wheel only the public reads work
        if not env.get("CITYGRID_GATEWAY_KEYS_FILE") and DEMO_KEYS.exists():
            env["CITYGRID_GATEWAY_KEYS_FILE"] = str(DEMO_KEYS)
        streams_cmd = [sys.executable, "-m", "streams.cli"]
        worker_log = open(base / "worker.log", "ab")
        ensure_topics(Settings(kafka_bootstrap=broker.bootstrap, topic_replication_factor=1,
                               topic_min_insync_replicas=1))
        children.append(subprocess.Popen([*streams_cmd, "worker"], env=env, stdout=worker_log,
                                         stderr=subprocess.STDOUT, start_new_session=True))
        sim_log = open(base / "simulate.log", "ab")
        children.append(subprocess.Popen([*streams_cmd, "simulate", "--act", "--rate", str(args.rate)], env=env,
                                         stdout=sim_log, stderr=subprocess.STDOUT, start_new_session=True))
        print(f"demo: worker (log {base / 'worker.log'}), simulator at {args.rate}/s; "
              f"metrics http://127.0.0.1:{metrics_port}/metrics; Ctrl-C stops everything", flush=True)
        print(f"demo: gateway http://127.0.0.1:{gateway_port}/ (Open311 at /open311/v2/, work API at /v1/cases, "
              f"OpenAPI at /openapi.json; keys in {env.get('CITYGRID_GATEWAY_KEYS_FILE', '(none)')})", flush=True)
        run_live(f"http://127.0.0.1:{web_port}", seconds=args.seconds, children=children)
    except KeyboardInterrupt:
        pass
    finally:
        print("\ndemo: stopping ...", flush=True)
        stop_all()
        print("demo: stopped", flush=True)
    return 0
