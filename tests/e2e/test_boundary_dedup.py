"""Dedup across a street boundary on the real worker: two inspectors report the same flooding 60 m apart on
either side of the boundary between two streets whose case inputs live in different partitions; the report
ends on one case (the later one's case is voided 作废 into the earlier, which holds both reports)."""
from __future__ import annotations

import pytest
from kafka.partitioner.default import murmur2

from streams.core.knowledge.knowledge import Knowledge
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import produce, query, wait_rows, wait_until
from tests.unit.core.cases.test_boundary import boundary_pairs

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
PARTITIONS = 4


def partition_of(street_code: str) -> int:
    return (murmur2(street_code.encode()) & 0x7FFFFFFF) % PARTITIONS


def test_reports_either_side_of_a_street_boundary_end_in_one_case(
        kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory) -> None:
    kb = Knowledge.load()
    for p, q in boundary_pairs(kb, 60):
        streets = [kb.locate(*point, None)[0].street_code for point in (p, q)]  # type: ignore[union-attr]
        if partition_of(streets[0]) != partition_of(streets[1]):  # type: ignore[arg-type]
            break
    else:
        pytest.skip("no boundary between streets of different partitions in the sample city")

    def field_report(report_id: str, at: tuple[float, float], ts: str) -> dict:
        return {"report_id": report_id, "reporter_id": f"INS-{report_id}", "reporter_kind": "inspector",
                "reported_at": ts, "category": "道路积水", "text": "路面积水很深，车子过不去",
                "lat": at[0], "lon": at[1]}

    produce(kafka.bootstrap, topic_prefix, [("field.reports", field_report("B1", p, "2026-11-20T09:30:00+08:00"))])
    store_url = store_url_factory("server")  # read while the worker runs (chdb is one process's)
    worker = worker_factory(store_url)
    wait_rows(worker, signals=1, cases=1)
    produce(kafka.bootstrap, topic_prefix, [("field.reports", field_report("B2", q, "2026-11-20T09:35:00+08:00"))])
    # the second case opens, probes the first's street, and is voided 作废 into the first (which takes its report)
    wait_until(lambda: [r["n"] for r in query(store_url, "SELECT count() AS n FROM cases FINAL "
                                                         "WHERE status = 'void'")] == [1],
               120, "the second case voided as a duplicate of the first", worker.tail)
    assert worker.stop() == 0, worker.tail()

    cases = query(store_url, "SELECT case_id, street_code, status, reporters, sources FROM cases FINAL "
                             "ORDER BY opened_ms")
    live = [c for c in cases if c["status"] != "void"]
    assert len(live) == 1, cases
    assert sorted(live[0]["sources"]) == ["inspector:B1", "inspector:B2"] and live[0]["reporters"] == 2
    assert live[0]["street_code"] == streets[0]
    void = [c for c in cases if c["status"] == "void"]
    assert [c["street_code"] for c in void] == [streets[1]]
