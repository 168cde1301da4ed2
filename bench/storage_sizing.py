"""Storage sizing from measured bytes per row: a simulated city day through the real core into the real tables.

    .venv/bin/python -m bench.storage_sizing [--calls-per-day 30000] [--devices 100000] [--json out.json]

1. One city day of the scenario (streams/sources/scenario.py) at ``--calls-per-day``, every feed, with the
   departments closing what they get (处置 after ~3 h, 核查 and 结案 after ~5 h), is replayed
   (streams.replay: the worker's ingest and case engine, virtual clock, SLA timers) into a fresh database
   on a private clickhouse-server 18.16.
2. Each table is merged (OPTIMIZE FINAL, as background merges would) and its on-disk size read from
   ``system.parts``: compressed bytes per row, with the rows the day produced.
3. Device data is scaled to ``--devices`` devices reporting once a minute: raw readings are not stored,
   only threshold alarms (``sensor_alarms``) and, where the migration exists, the one-minute aggregates
   (``device_minutes``), whose bytes per row are measured on synthetic minutes for that many devices.

Prints a table (and writes JSON): rows per day, bytes per row, GB per day, per month and per year.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streams.core.times import CITY_TZ  # noqa: E402

# Hours after a case opens when its department reports 处置 done, and when 核查/结案 follow.
HANDLED_AFTER_H, CLOSED_AFTER_H = 3.0, 5.0


def city_day(calls_per_day: float, seed: int, day: datetime) -> tuple[list[str], dict[str, int]]:
    """JSON lines for streams.replay: the scenario's day (every feed scaled to ``calls_per_day``); and counts."""
    from streams.core.knowledge.knowledge import Knowledge
    from streams.sources.scenario import Burst, ScenarioConfig, scenario_for

    base = ScenarioConfig()
    scale = calls_per_day / base.hotline_per_day
    config = ScenarioConfig(hotline_per_day=calls_per_day, field_per_day=base.field_per_day * scale,
                            camera_per_day=base.camera_per_day * scale, registry_per_day=base.registry_per_day * scale,
                            tracks_per_day=base.tracks_per_day * scale, iot_per_day=base.iot_per_day * scale,
                            bursts=tuple(Burst(b.feed, b.start_hour, b.hours, b.per_hour * scale) for b in base.bursts),
                            malformed_share=0.0)
    scenario = scenario_for(Knowledge.load(), seed, config)
    start = int(day.timestamp() * 1000)
    lines: list[str] = []
    counts: dict[str, int] = {}
    for record in scenario.timeline(start, until_ms=start + 86_400_000):
        lines.append(json.dumps({"topic": record.topic, "value": record.value}, ensure_ascii=False))
        counts[record.topic] = counts.get(record.topic, 0) + 1
    return lines, counts


def department_actions(cases: dict[str, dict[str, Any]], seed: int) -> list[str]:
    """What the departments and closers do with each case of the day: the primary department reports 处置
    done about ``HANDLED_AFTER_H`` hours after the case opened, the closer (the originating station or
    committee, else the centre) verifies and closes about ``CLOSED_AFTER_H`` hours after it opened."""
    rng = random.Random(seed)
    lines = []
    for case_id, doc in sorted(cases.items()):
        if not doc.get("departments") or doc.get("stage") != "handle":
            continue
        origin = doc.get("origin")
        own = origin in ("station", "committee")  # 谁发单、谁验收、谁结案
        closer = (origin, doc.get("origin_reporter")) if own else ("center", "区网格中心")
        handler = ("department", doc["departments"][0])
        for hours, action, (actor_kind, actor) in ((HANDLED_AFTER_H, "handled", handler),
                                                   (CLOSED_AFTER_H, "verify_pass", closer),
                                                   (CLOSED_AFTER_H + 0.1, "close", closer)):
            ts = datetime.fromtimestamp(doc["opened_ms"] / 1000 + hours * 3600 * rng.uniform(0.8, 1.2), CITY_TZ)
            lines.append(json.dumps({"topic": "case.actions", "value": {
                "action_id": f"SZ-{case_id}-{action}", "ts": ts.isoformat(timespec="seconds"), "case_id": case_id,
                "actor_kind": actor_kind, "actor_id": actor, "action": action, "note": None}}, ensure_ascii=False))
    return lines


def webhook_rows(store: Any, per_dispatch: float = 1.05) -> int:
    """One delivery per dispatch and department (5 % retried): the rows the deliverer writes."""
    dispatches = store.query("SELECT dispatch_id, case_id, ts_ms, departments FROM dispatches FINAL")
    rng = random.Random(1)
    rows = []
    for d in dispatches:
        for department in d["departments"]:
            attempts = 2 if rng.random() < per_dispatch - 1 else 1
            for attempt in range(1, attempts + 1):
                rows.append({"delivery_id": f"{d['dispatch_id']}:{department}", "department": department,
                             "case_id": d["case_id"], "kind": "dispatch",
                             "idempotency_key": f"{d['dispatch_id']}:{department}", "attempt": attempt,
                             "status": "delivered" if attempt == attempts else "retry",
                             "http_status": 204 if attempt == attempts else 503,
                             "latency_ms": round(rng.uniform(20, 400), 1), "ts_ms": d["ts_ms"] + attempt * 1000})
    store.insert("webhook_deliveries", rows)
    return len(rows)


def device_minute_rows(store: Any, devices: int, minutes: int = 60) -> int:
    """Synthetic one-minute aggregates of ``devices`` devices for ``minutes`` minutes (if the table exists)."""
    if "device_minutes" not in store.tables():
        return 0
    writable = set(store.writable_columns("device_minutes"))
    rng = random.Random(2)
    start = int(datetime(2026, 11, 20, 10, tzinfo=CITY_TZ).timestamp() * 1000)
    metrics = ("vibration_mm_s", "tilt_permille", "crack_mm", "ebike_detected")
    batch: list[dict[str, Any]] = []
    total = 0
    for minute in range(minutes):
        for device in range(devices):
            metric = metrics[device % len(metrics)]
            level = rng.uniform(0.1, 1.5)
            row = {"device_id": f"DEV-{device:06d}", "metric": metric, "minute_ms": start + minute * 60_000,
                   "n": 1, "min": level, "max": level, "sum": level, "last": level,
                   "building": f"楼{device // 40:05d}", "threshold": 2.5}
            batch.append({k: v for k, v in row.items() if k in writable})
        if len(batch) >= 200_000:
            store.insert("device_minutes", batch)
            total += len(batch)
            batch = []
    if batch:
        store.insert("device_minutes", batch)
        total += len(batch)
    return total


def measure(store: Any) -> dict[str, dict[str, float]]:
    for table in store.tables():
        if table != "schema_migrations":
            store.execute(f"OPTIMIZE TABLE {table} FINAL")
    rows = store.query(
        "SELECT table, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, "
        "sum(data_uncompressed_bytes) AS uncompressed, sum(bytes) AS on_disk FROM system.parts "
        "WHERE database = %(db)s AND active AND table != 'schema_migrations' GROUP BY table ORDER BY table",
        {"db": store.database})
    return {r["table"]: {"rows": r["rows"], "bytes_per_row": r["on_disk"] / r["rows"] if r["rows"] else 0.0,
                         "compressed": r["compressed"], "uncompressed": r["uncompressed"], "on_disk": r["on_disk"]}
            for r in rows}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls-per-day", type=float, default=30_000)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--device-alarms-per-day", type=float, default=0.2,
                        help="threshold alarms per device and day (a sensor alarms every few days)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from streams.local.clickhouse import LocalClickHouseServer
    from streams.replay import replay
    from streams.settings import Settings
    from streams.storage import open_store

    day = datetime(2026, 11, 20, tzinfo=CITY_TZ)
    with tempfile.TemporaryDirectory(prefix="citygrid-sizing-") as tmp:
        server = LocalClickHouseServer(Path(tmp))
        server.start()
        try:
            store = open_store(server.store_url("sizing"))
            store.migrate()
            lines, counts = city_day(args.calls_per_day, args.seed, day)
            until = int((day + timedelta(days=1.5)).timestamp() * 1000)
            with open("/dev/null", "w") as quiet:
                # first without actions, to learn the cases; then again with the departments acting on them
                opened = replay(lines, Settings(), None, until_ms=until, err=quiet).cases
                actions = department_actions(opened, args.seed)
                report = replay(lines + actions, Settings(), store, until_ms=until, err=quiet)
            print(report.summary(), file=sys.stderr)
            webhook_rows(store)
            minute_rows = device_minute_rows(store, min(args.devices, 20_000), minutes=30)
            measured = measure(store)
            store.close()
        finally:
            server.stop()

    readings_per_day = args.devices * 1440
    per_day: dict[str, float] = {}
    for table, m in measured.items():
        if table == "device_minutes":
            # one row per device, metric and minute (the synthetic rows give one metric per device)
            per_day[table] = args.devices * 1440.0 if minute_rows else 0.0
        elif table == "sensor_alarms":
            per_day[table] = args.devices * args.device_alarms_per_day
        else:
            per_day[table] = float(m["rows"])  # the replayed city day
    out = {"calls_per_day": args.calls_per_day, "devices": args.devices, "readings_per_day": readings_per_day,
           "records": counts, "tables": {}}
    total = 0.0
    print(f"{'table':<22}{'rows/day':>14}{'bytes/row':>11}{'MB/day':>10}{'GB/month':>10}{'GB/year':>10}")
    for table in sorted(measured):
        rows, bpr = per_day[table], measured[table]["bytes_per_row"]
        mb_day = rows * bpr / 1e6
        total += mb_day
        ratio = measured[table]["uncompressed"] / max(1, measured[table]["compressed"])
        out["tables"][table] = {"rows_per_day": rows, "bytes_per_row": round(bpr, 1), "mb_per_day": round(mb_day, 2),
                                "measured_rows": measured[table]["rows"], "compression": round(ratio, 1)}
        print(f"{table:<22}{rows:>14,.0f}{bpr:>11.1f}{mb_day:>10.1f}"
              f"{mb_day * 30 / 1e3:>10.2f}{mb_day * 365 / 1e3:>10.1f}")
    print(f"{'total':<22}{'':>14}{'':>11}{total:>10.1f}{total * 30 / 1e3:>10.2f}{total * 365 / 1e3:>10.1f}")
    out["total_mb_per_day"] = round(total, 1)
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
