"""bench/run.py's parts work on a few hundred records (no speed asserted: timings stay in bench/)."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from streams.local.kafka import LocalKafka
from tests.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from bench import run as bench  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


def test_passthrough_moves_every_record(kafka: LocalKafka) -> None:
    rate = asyncio.run(bench.passthrough(kafka.bootstrap, 300))
    assert rate.per_s > 0 and rate.per_cpu_s > 0


def test_the_backlog_is_the_case_path_mix_and_its_expected_outcomes_add_up() -> None:
    records = bench.backlog(400, seed=7, start_ms=int(time.time() * 1000) - 3_600_000)
    assert len(records) == 400
    assert {r.topic for r in records} <= {"hotline.calls", "field.reports", "camera.alerts", "registry.changes"}
    expected = bench.expected_outcomes(records)
    assert expected["signals"] > 0
    assert expected["signals"] + expected.get("triage", 0) + expected.get("dead_letters", 0) >= 350


@pytest.mark.parametrize("path", ["lean", "faust"])
def test_a_worker_drains_a_small_backlog_to_its_expected_outcomes(kafka: LocalKafka, tmp_path: Path,
                                                                   path: str) -> None:
    # in the past, but not days: the input rules dead-letter event times too old or in the future
    records = bench.past_backlog(300, seed=11)
    assert records[-1].ts_ms < time.time() * 1000
    expected = bench.expected_outcomes(records)
    # case_path returns only once every expected row is stored and every signal is on a case (or raises)
    rate = bench.case_path(kafka.bootstrap, tmp_path, records, expected, [f"chdb://{tmp_path / 'chdb'}"],
                           case_path=path)
    assert rate.per_s > 0 and rate.per_cpu_s > 0


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert bench.quantile(buckets, 0.5) == pytest.approx(0.1)
    assert bench.quantile(buckets, 0.75) == pytest.approx(0.15)
    assert bench.quantile([], 0.5) != bench.quantile([], 0.5)  # nan: nothing measured


def test_profile_summary_reads_py_spys_collapsed_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "profile.raw"
    raw.write_text("main (a.py:1);work (b.py:2);hot (c.py:3) 3\nmain (a.py:1);idle (d.py:4) 1\n")
    summary = bench.profile_summary(raw)
    assert summary["self"][0] == ("hot (c.py:3)", 75.0)
    assert ("work (b.py:2)", 75.0) in summary["inclusive"]


def test_the_core_bench_runs_every_step_and_counts_what_the_ingest_predicts() -> None:
    from bench import core

    result = core.run(600, seed=7)
    assert result["events"] == 600
    assert set(result["cpu_us_per_event"]) == {"decode", "ingest", "engine"}
    assert all(v > 0 for v in result["cpu_us_per_event"].values())
    # the same signals the worker's bench expects from these records (the offline ingest of bench/run.py)
    expected = bench.expected_outcomes(bench.past_backlog(600, 7))
    assert result["signals"] == expected["signals"]
    assert 0 < result["open_cases"] <= result["signals"]
