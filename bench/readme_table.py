"""Rewrites the README's benchmark table from the latest results in bench/results/.

    .venv/bin/python bench/readme_table.py [--check]

The table sits between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``; everything else in the README stays
as it is. It is made from ``case_path.json`` (bench/run.py), every ``state*.json`` (bench/state_bench.py) and
``iot.json`` (bench/iot.py: the IoT fast path beside its own passthrough). ``--check`` only says whether the README
matches (exit 1 when not). tests/unit/bench/test_readme_table.py checks it too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(figure: dict[str, Any] | None) -> str:
    return f"{figure['load'][0]:.1f}" if figure and figure.get("load") else "–"


def _run_load(result: dict[str, Any]) -> str:
    """The 1-minute load of a whole run: bench/meta.py's ``load_at_start``, or the ``load_avg_1m`` bench/iot.py
    writes (taken when its run ends)."""
    if result.get("load_at_start"):
        return f"{result['load_at_start'][0]:.1f}"
    return f"{result['load_avg_1m']:.1f}" if result.get("load_avg_1m") is not None else "–"


def _ratio(figure: dict[str, Any]) -> str:
    return f"{figure['ratio']:.3f}" if "ratio" in figure else "–"


def _per_cpu(figure: dict[str, Any], unit: str = "events") -> str:
    if "per_cpu_second" not in figure:
        return "–"
    ratio = f" ({figure['cpu_ratio']:.3f})" if "cpu_ratio" in figure else ""
    return f"{figure['per_cpu_second']:,} {unit}{ratio}"


def _source(result: dict[str, Any], name: str) -> str:
    return f"`{name}`: commit {result.get('commit', '?')}, {result.get('date', '?')}, {result.get('cpus', '?')} CPUs"


def case_path_rows(result: dict[str, Any]) -> list[list[str]]:
    goals = result.get("goals", {})
    speed_goal = (f"≥ {goals['case_path_events_per_s']:,} (must ≥ {goals['case_path_events_per_s_must']:,})"
                  if "case_path_events_per_s" in goals else "")
    rows = []
    for key, label in (("passthrough", "at start"), ("passthrough_at_end", "at end")):
        if key in result:
            rows.append([f"At-least-once aiokafka passthrough ({label})", f"{result[key]['value']:,} msg/s", "1",
                         _per_cpu(result[key], "msg"), "baseline", _load(result[key])])
    for path, entry in result.get("paths", {}).items():
        one = entry.get("one_worker_chdb")
        if one:
            rows.append([f"Case path `{path}`, one worker, chdb ({result['events']:,} records)",
                         f"{one['value']:,} events/s", _ratio(one), _per_cpu(one), speed_goal, _load(one)])
        lat = entry.get("latency")
        if lat:
            rows.append([f"Case path `{path}`, ingest → dispatch at {lat['rate']:,.0f} events/s",
                         f"p50 {lat['p50_ms']:,.0f} ms, p99 {lat['p99_ms']:,.0f} ms", "–", "–",
                         f"p99 ≤ {goals.get('latency_p99_ms', 200)} ms", _load(lat)])
    scale = result.get("scale_out")
    if scale:
        for key, label in (("one_worker", "one worker"), ("two_workers", "two workers")):
            fig = scale[key]
            goal = f"two / one = {scale['two_over_one']:.2f}" if key == "two_workers" else ""
            rows.append([f"Case path `{scale['path']}`, {label}, clickhouse-server", f"{fig['value']:,} events/s",
                         _ratio(fig), _per_cpu(fig), goal, _load(fig)])
    return rows


def state_rows(result: dict[str, Any]) -> list[list[str]]:
    goals = result.get("goals", {})
    rows = []
    for key, label in (("new_worker", "new worker (restore from the changelog)"), ("restart", "restart (SIGTERM)"),
                       ("restart_after_kill", "restart after SIGKILL")):
        fig = result.get(key)
        if not fig:
            continue
        measured = f"{fig['seconds_to_processing']:,.1f} s to processing"
        if fig.get("seconds_to_all_cases_open") is not None:
            measured += f" ({fig['seconds_to_all_cases_open']:,.1f} s until every partition is restored)"
        measured += f", peak RSS {fig['peak_rss_mb']:,} MB"
        rows.append([f"{result['cases']:,} open cases, RocksDB: {label}",
                     measured, "–", "–",
                     f"≤ {goals.get('seconds_to_processing_max', 30)} s, ≤ {goals.get('peak_rss_mb_max', 1536):,} MB",
                     _load(fig)])
    return rows


def iot_rows(result: dict[str, Any]) -> list[list[str]]:
    """The IoT fast path and the passthrough it is measured against (same records, same broker, same run)."""
    load = _run_load(result)
    rows = [[f"IoT: at-least-once aiokafka passthrough of the same {result['readings']:,} readings",
             f"{result['passthrough_per_s']:,} records/s", "1", "–", "baseline", load],
            [f"IoT fast path, {result['readings']:,} readings of {result['active_devices']:,} of "
             f"{result['devices']:,} devices", f"{result['iot_per_s']:,} readings/s", f"{result['ratio']:.3f}", "–",
             f"ratio ≥ {result['goal_ratio']}" if "goal_ratio" in result else "", load]]
    start = result.get("worker_start_s")
    if start:
        rows.append([f"Worker start → healthy with {result['devices']:,} devices",
                     f"{start['city']:,.1f} s (sample city {start['sample']:,.1f} s); registry load "
                     f"{result['registry_load_s']:,.2f} s", "–", "–", "", load])
    return rows


def table(case_path: dict[str, Any] | None, states: dict[str, dict[str, Any]],
          iot: dict[str, Any] | None = None) -> str:
    rows = [["Figure", "Measured", "Ratio to passthrough", "Per CPU-second (ratio)", "Goal", "Load (1 min)"]]
    sources = []
    if case_path:
        rows += case_path_rows(case_path)
        sources.append(_source(case_path, "case_path.json"))
    for name, result in sorted(states.items(), key=lambda item: item[1].get("cases", 0)):
        rows += state_rows(result)
        sources.append(_source(result, name))
    if iot:
        rows += iot_rows(iot)
        sources.append(_source(iot, "iot.json"))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    lines.append("")
    lines.append("From bench/results/ — " + "; ".join(sources) + ".")
    return "\n".join(lines)


def latest(results: Path = RESULTS) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], dict[str, Any] | None]:
    """(case_path.json, {name: state*.json}, iot.json) from ``results``; a missing file is None (or left out)."""
    case_file, iot_file = results / "case_path.json", results / "iot.json"
    case_path = json.loads(case_file.read_text()) if case_file.exists() else None
    states = {p.name: json.loads(p.read_text()) for p in sorted(results.glob("state*.json"))}
    iot = json.loads(iot_file.read_text()) if iot_file.exists() else None
    return case_path, states, iot


def rewrite(readme: str, body: str) -> str:
    """The README with the text between the markers replaced by ``body``."""
    head, found, rest = readme.partition(BEGIN)
    if not found or END not in rest:
        raise ValueError(f"the README has no {BEGIN} … {END} section")
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is not the latest")
    args = parser.parse_args()
    readme = README.read_text()
    updated = rewrite(readme, table(*latest()))
    if args.check:
        if updated != readme:
            print("README benchmark table is out of date: run bench/readme_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
