"""The README's benchmark table is the one bench/readme_table.py makes from the results in bench/results/."""
from __future__ import annotations

import json
import sys

import pytest

from tests.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench import readme_table  # noqa: E402

CASE_PATH = {
    "bench": "case_path", "commit": "abc", "date": "2026-01-01T00:00:00Z", "cpus": 2, "events": 20000,
    "goals": {"case_path_events_per_s": 10000, "case_path_events_per_s_must": 5000, "latency_p99_ms": 200},
    "passthrough": {"value": 60000, "per_cpu_second": 70000, "load": [1.0, 1.0, 1.0]},
    "paths": {"lean": {"one_worker_chdb": {"value": 6000, "ratio": 0.1, "per_cpu_second": 7000, "cpu_ratio": 0.1,
                                           "load": [1.5, 1.0, 1.0]},
                       "latency": {"rate": 1000.0, "p50_ms": 40.0, "p99_ms": 150.0, "dispatches": 900,
                                   "load": [1.2, 1.0, 1.0]}}},
    "scale_out": {"path": "lean", "one_worker": {"value": 5000, "ratio": 0.083, "load": [1.0, 1, 1]},
                  "two_workers": {"value": 7000, "ratio": 0.117, "load": [2.0, 1, 1]}, "two_over_one": 1.4},
}
STATE = {"bench": "state", "commit": "abc", "date": "2026-01-01T00:00:00Z", "cpus": 2, "cases": 1000000,
         "goals": {"seconds_to_processing_max": 30, "peak_rss_mb_max": 1536},
         "restart": {"seconds_to_processing": 6.7, "peak_rss_mb": 811, "load": [2.0, 1, 1]}}
IOT = {"bench": "iot", "commit": "def", "date": "2026-01-02T00:00:00+08:00", "cpus": 2, "load_avg_1m": 1.24,
       "devices": 100000, "active_devices": 20000, "readings": 300000, "rounds": 2, "registry_load_s": 0.422,
       "worker_start_s": {"city": 7.91, "sample": 3.3}, "passthrough_per_s": 54505, "iot_per_s": 42174,
       "ratio": 0.774, "goal_ratio": 0.6}


def test_the_table_carries_every_figure_its_ratio_and_load() -> None:
    text = readme_table.table(CASE_PATH, {"state.json": STATE})
    assert "| At-least-once aiokafka passthrough (at start) | 60,000 msg/s | 1 | 70,000 msg | baseline | 1.0 |" in text
    assert "| Case path `lean`, one worker, chdb (20,000 records) | 6,000 events/s | 0.100 | 7,000 events (0.100) |" \
        in text
    assert "p50 40 ms, p99 150 ms" in text
    assert "two / one = 1.40" in text
    assert "1,000,000 open cases, RocksDB: restart (SIGTERM) | 6.7 s to processing, peak RSS 811 MB" in text


def test_the_table_carries_the_iot_fast_path_beside_its_passthrough() -> None:
    text = readme_table.table(CASE_PATH, {"state.json": STATE}, IOT)
    rows = text.splitlines()
    assert "| IoT: at-least-once aiokafka passthrough of the same 300,000 readings | 54,505 records/s | 1 | – " \
           "| baseline | 1.2 |" in rows
    assert "| IoT fast path, 300,000 readings of 20,000 of 100,000 devices | 42,174 readings/s | 0.774 | – " \
           "| ratio ≥ 0.6 | 1.2 |" in rows
    assert "| Worker start → healthy with 100,000 devices | 7.9 s (sample city 3.3 s); registry load 0.42 s | – | – " \
           "|  | 1.2 |" in rows
    assert "`iot.json`: commit def, 2026-01-02T00:00:00+08:00, 2 CPUs" in text
    # after the other figures, and left out (with its source) when there is no iot.json
    assert text.index("IoT fast path") > text.index("RocksDB: restart")
    assert "IoT" not in readme_table.table(CASE_PATH, {"state.json": STATE}) and "iot.json" not in \
        readme_table.table(CASE_PATH, {"state.json": STATE}, None)


def test_iot_load_from_the_run_metadata_when_present_and_without_a_start_up_timing() -> None:
    iot = {**IOT, "load_at_start": [2.5, 2.0, 1.0], "worker_start_s": None}
    rows = readme_table.iot_rows(iot)
    assert [r[-1] for r in rows] == ["2.5", "2.5"]   # no start-up row (--skip-worker-start)
    assert readme_table.iot_rows({k: v for k, v in IOT.items() if k != "load_avg_1m"})[0][-1] == "–"


def test_latest_reads_iot_json(tmp_path) -> None:
    (tmp_path / "iot.json").write_text(json.dumps(IOT))
    (tmp_path / "state.json").write_text(json.dumps(STATE))
    assert readme_table.latest(tmp_path) == (None, {"state.json": STATE}, IOT)
    (tmp_path / "iot.json").unlink()
    assert readme_table.latest(tmp_path)[2] is None


def test_rewrite_replaces_only_the_marked_section() -> None:
    readme = f"intro\n{readme_table.BEGIN}\nold\n{readme_table.END}\noutro\n"
    assert readme_table.rewrite(readme, "new") == f"intro\n{readme_table.BEGIN}\nnew\n{readme_table.END}\noutro\n"
    with pytest.raises(ValueError):
        readme_table.rewrite("no markers", "new")


def test_the_readme_shows_the_latest_results() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme == readme_table.rewrite(readme, readme_table.table(*readme_table.latest())), \
        "run bench/readme_table.py after a bench"


def test_every_result_file_names_its_commit_date_cpus_and_load() -> None:
    case_path, states, iot = readme_table.latest()
    for result in ([case_path] if case_path else []) + list(states.values()):
        assert {"commit", "date", "cpus", "load_at_start"} <= result.keys()
        json.dumps(result)
    if iot:  # bench/iot.py writes its 1-minute load as load_avg_1m
        assert {"commit", "date", "cpus"} <= iot.keys() and ({"load_at_start", "load_avg_1m"} & iot.keys())
