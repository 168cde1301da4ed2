"""``streams city generate``: a city data directory with a device table of any size (100,000 devices...)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    city = subparsers.add_parser("city", help="city data: generate a city with many devices")
    sub = city.add_subparsers(dest="city_command", required=True)
    generate = sub.add_parser("generate", help="write a city data dir (sample grid + N generated devices)")
    generate.add_argument("--devices", type=int, default=100_000, help="devices to generate (default 100000)")
    generate.add_argument("--out", required=True, help="directory to write (use it as CITYGRID_CITY_DIR)")
    generate.add_argument("--format", choices=("csv", "parquet"), default="csv")
    generate.add_argument("--seed", type=int, default=1)
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from streams.core.knowledge.geo import City
    from streams.core.knowledge.sensors import DeviceRegistry
    from streams.sources.city import write_city

    out = Path(args.out)
    table = write_city(out, args.devices, args.seed, args.format)
    started = time.perf_counter()
    registry = DeviceRegistry.load(out / "devices.yaml", City.load(out / "city.yaml"))
    print(f"{table}: {args.devices} devices; the registry loads {len(registry)} devices in "
          f"{time.perf_counter() - started:.2f} s; run with CITYGRID_CITY_DIR={out}", file=sys.stderr)
    return 0
