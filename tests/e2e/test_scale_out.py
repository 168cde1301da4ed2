"""Two worker processes share the case path through Kafka consumer groups, on clickhouse-server (chdb is one
process): both get partitions, one is SIGKILLed while records keep coming, the other takes its partitions
over (from its standby copy and the changelog's tail), and every input ends on exactly one live case."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.run import expected_outcomes
from streams.local.kafka import LocalKafka
from streams.sources.scenario import ScenarioConfig, scenario_for
from tests.e2e.helpers import metric_total, produce, query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
RECORDS = 2400


def city_records(kb: Any, n: int) -> list[Any]:
    """A district's day of case-path records (no bursts: a storm folds into a dozen cases)."""
    config = ScenarioConfig(hotline_per_day=3000, field_per_day=1200, camera_per_day=600, registry_per_day=0,
                            tracks_per_day=0, bursts=(), malformed_share=0.0)
    start = int(time.time() * 1000) - 2 * 86_400_000
    return list(scenario_for(kb, 21, config, sources=["hotline", "field", "camera"]).timeline(start, count=n))


def holds_partitions(worker: Any) -> float:
    try:
        return metric_total(worker.metrics(), "citygrid_case_partitions")
    except OSError:
        return 0.0


def on_cases(store_url: str) -> dict[str, int]:
    """source ("kind:id") -> how many live cases hold its report (a case voided 作废 as the duplicate of a case
    across a street boundary handed its reports to that case, and does not count)."""
    rows = query(store_url, "SELECT source, uniqExact(case_id) AS cases FROM (SELECT case_id, "
                            "arrayJoin(sources) AS source FROM cases FINAL WHERE status != 'void') GROUP BY source")
    return {r["source"]: r["cases"] for r in rows}


@pytest.mark.parametrize("standbys", [False, True], ids=["active-only", "standbys"])
def test_two_workers_share_the_partitions_and_one_takes_over_after_a_kill(
        kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory, tmp_path: Path,
        standbys: bool) -> None:
    """With ``case_standbys`` each worker also tails the other's changelogs (the takeover reads only their tail)."""
    from streams.core.knowledge.knowledge import Knowledge

    records = city_records(Knowledge.load(), RECORDS)
    expected = expected_outcomes(records)
    store_url = store_url_factory("server")
    first, rest = records[:800], records[800:]
    produce(kafka.bootstrap, topic_prefix, [(r.topic, r.value) for r in first])

    one = worker_factory(store_url, data_dir=str(tmp_path / "one"), case_standbys=str(standbys).lower())
    two = worker_factory(store_url, data_dir=str(tmp_path / "two"), case_standbys=str(standbys).lower())
    wait_until(lambda: holds_partitions(one) > 0 and holds_partitions(two) > 0, 180,
               "both workers holding case.inputs partitions", lambda: one.tail() + "\n" + two.tail())
    assert holds_partitions(one) + holds_partitions(two) == 4

    # records keep coming while one worker dies mid-stream
    feeding = threading.Thread(target=lambda: [produce(kafka.bootstrap, topic_prefix,
                                                       [(r.topic, r.value) for r in rest[i:i + 100]])
                                               or time.sleep(0.2) for i in range(0, len(rest), 100)])
    feeding.start()
    wait_until(lambda: len(on_cases(store_url)) > 600, 180, "some reports on cases before the kill", two.tail)
    one.kill()
    feeding.join()

    wait_until(lambda: holds_partitions(two) == 4, 120, "the survivor holding every partition", two.tail)
    wait_until(lambda: len(on_cases(store_url)) >= expected["signals"], 300,
               f"all {expected['signals']} signals on cases", two.tail)
    # a report merged across a street boundary is on two cases until the duplicate's voiding (two more hops
    # through case.inputs and the sink) arrives: wait for the pipeline to settle, then check it exactly
    wait_until(lambda: all(n == 1 for n in on_cases(store_url).values()), 180,
               "every report on exactly one live case", two.tail)
    assert two.stop() == 0, two.tail()

    landed = on_cases(store_url)
    assert len(landed) == expected["signals"]
    twice = sorted(source for source, n in landed.items() if n != 1)
    assert not twice, (f"reports on two live cases: {twice}\n" + "\n".join(str(r) for r in query(
        store_url, "SELECT case_id, version, status, reporters, sources FROM cases FINAL WHERE hasAny(sources, "
        f"{twice!r})")) + "\n" + "\n".join(str(r) for r in query(
        store_url, "SELECT case_id, ts_ms, action, from_stage, to_stage, detail FROM case_transitions FINAL "
        "WHERE case_id IN (SELECT case_id FROM cases FINAL WHERE hasAny(sources, "
        f"{twice!r})) ORDER BY case_id, ts_ms")))
    cases = query(store_url, "SELECT count() AS n, uniqExact(case_id) AS ids FROM cases FINAL")[0]
    assert cases["n"] == cases["ids"] > 0.3 * expected["signals"]
    signals = query(store_url, "SELECT count() AS n FROM signals FINAL")[0]["n"]
    assert signals == expected["signals"]
