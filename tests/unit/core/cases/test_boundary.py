"""Dedup across street (partition) boundaries: reports of one problem on either side of a street boundary end
in one case, whichever side reports first or when both open a case at once (engines per street, the cross
inputs delivered as the worker's case.inputs would)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streams.bus.codec import registry
from streams.core.cases.engine import CaseEngine, Outputs
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import Signal

TS = "2026-11-20T09:30:00+08:00"


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def boundary_points(kb: Knowledge, apart_m: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two points about ``apart_m`` apart on either side of a boundary between two streets."""
    for pair in boundary_pairs(kb, apart_m):
        return pair
    raise AssertionError("no street boundary in the sample city")


def boundary_pairs(kb: Knowledge, apart_m: float) -> Iterator[tuple[tuple[float, float], tuple[float, float]]]:
    """Every such pair of points, one per pair of neighbouring cells of different streets."""
    import h3

    from streams.core.knowledge.geo import distance_m

    city = kb.city
    for cell, street in sorted(city.cell_street.items()):
        for near in sorted(h3.grid_ring(cell, 1)):
            other = city.cell_street.get(near)
            if other is None or other == street:
                continue
            a, b = h3.cell_to_latlng(cell), h3.cell_to_latlng(near)
            gap = distance_m(a, b)
            share = 0.5 - apart_m / (2 * gap)
            p = (a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share)
            q = (b[0] + (a[0] - b[0]) * share, b[1] + (a[1] - b[1]) * share)
            if city.cell_of(*p) == cell and city.cell_of(*q) == near:
                yield p, q


def report(kb: Knowledge, report_id: str, at: tuple[float, float], category: str = "道路积水",
           ts: str = TS) -> Signal:
    record = registry().from_json("field_report", {
        "report_id": report_id, "reporter_id": f"INS-{report_id}", "reporter_kind": "inspector", "reported_at": ts,
        "category": category, "text": "路面积水很深", "lat": at[0], "lon": at[1]})
    signals = Ingestor(kb).ingest("field_report", record, 1_795_138_300_000).signals
    assert len(signals) == 1
    return signals[0]


class City:
    """One engine per street, as the worker has one per case.inputs partition; cross inputs routed by street."""

    def __init__(self, kb: Knowledge) -> None:
        self.kb = kb
        self.engines: dict[str, CaseEngine] = {}
        self.queue: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []

    def engine(self, street: str) -> CaseEngine:
        if street not in self.engines:
            self.engines[street] = CaseEngine(self.kb, {}, {}, auto_dispatch=True)
        return self.engines[street]

    def signal(self, signal: Signal, deliver: bool = True) -> None:
        self.queue += self.engine(signal.street_code or "").on_signal(signal).cross
        if deliver:
            self.deliver()

    def deliver(self) -> int:
        handled = 0
        while self.queue:
            item = self.queue.pop(0)
            self.delivered.append(item)
            engine = self.engine(item["key"])
            handler = {"probe": engine.on_probe, "void_duplicate": engine.on_void_duplicate,
                       "absorb": engine.on_absorb}[item["kind"]]
            out: Outputs = handler({k: v for k, v in item.items() if k not in ("key", "kind")})
            self.queue += out.cross
            handled += 1
        return handled

    def cases(self) -> list[dict[str, Any]]:
        return [doc for engine in self.engines.values() for doc in engine.cases.values()]

    def live(self) -> list[dict[str, Any]]:
        return [doc for doc in self.cases() if doc["stage"] != "void"]


def test_a_report_across_the_boundary_joins_the_earlier_case(kb: Knowledge) -> None:
    p, q = boundary_points(kb, 60)
    first, second = report(kb, "R1", p), report(kb, "R2", q, ts="2026-11-20T09:40:00+08:00")
    assert first.street_code != second.street_code
    city = City(kb)
    city.signal(first)
    city.signal(second)
    live = city.live()
    assert len(live) == 1 and live[0]["reporters"] == 2
    assert sorted(live[0]["sources"]) == ["inspector:R1", "inspector:R2"]
    assert live[0]["case_id"].startswith(first.street_code or "")  # the earlier case wins
    void = [d for d in city.cases() if d["stage"] == "void"]
    assert len(void) == 1 and void[0]["case_id"].startswith(second.street_code or "")
    assert void[0]["duplicate_of"] == live[0]["case_id"] and void[0]["sources"] == []   # each report in one case
    # an action naming the second report reaches the case that holds it now
    assert city.engine(first.street_code or "").sources["R2"] == live[0]["case_id"]


def test_reports_moved_on_when_the_winner_itself_was_voided(kb: Knowledge) -> None:
    """Three reports along a boundary: whatever order the cross inputs take, every report ends in one live case."""
    p, q = boundary_points(kb, 60)
    for order in (list, lambda items: list(reversed(items))):
        city = City(kb)
        city.signal(report(kb, "R1", p), deliver=False)
        city.signal(report(kb, "R2", q, ts="2026-11-20T09:31:00+08:00"), deliver=False)
        city.signal(report(kb, "R3", p, ts="2026-11-20T09:32:00+08:00"), deliver=False)
        city.queue = order(city.queue)
        city.deliver()
        owners: dict[str, list[str]] = {}
        for doc in city.cases():
            for source in doc["sources"]:
                owners.setdefault(source, []).append(doc["case_id"])
        assert sorted(owners) == ["inspector:R1", "inspector:R2", "inspector:R3"]
        assert all(len(cases) == 1 for cases in owners.values()), owners
        assert len(city.live()) == 1


def test_cases_opened_at_once_on_both_sides_end_as_one(kb: Knowledge) -> None:
    p, q = boundary_points(kb, 60)
    city = City(kb)
    city.signal(report(kb, "R1", p), deliver=False)
    city.signal(report(kb, "R2", q, ts="2026-11-20T09:31:00+08:00"), deliver=False)
    assert len(city.live()) == 2  # both opened before either side heard of the other
    city.queue.reverse()          # whichever probe arrives first
    city.deliver()
    live = city.live()
    assert len(live) == 1 and live[0]["reporters"] == 2
    # every cross input delivered again (a replayed batch) changes nothing
    before = {d["case_id"]: (d["stage"], d["reporters"], sorted(d["sources"])) for d in city.cases()}
    city.queue = list(city.delivered)
    city.deliver()
    assert {d["case_id"]: (d["stage"], d["reporters"], sorted(d["sources"])) for d in city.cases()} == before


def test_far_apart_or_different_problems_stay_separate(kb: Knowledge) -> None:
    p, q = boundary_points(kb, 60)
    city = City(kb)
    city.signal(report(kb, "R1", p))
    city.signal(report(kb, "R2", q, category="井盖破损"))
    assert len(city.live()) == 2
    far_p, far_q = boundary_points(kb, 260)  # beyond 道路积水's 150 m
    city = City(kb)
    city.signal(report(kb, "R3", far_p))
    city.signal(report(kb, "R4", far_q))
    assert len(city.live()) == 2


def test_reports_inside_a_street_send_no_probe(kb: Knowledge) -> None:
    engine = CaseEngine(kb, {}, {}, auto_dispatch=True)
    centre = kb.city.streets["徐家汇街道"].center
    signal = report(kb, "R5", centre)
    assert kb.streets_near(centre[0], centre[1], 150) == [signal.street_code]
    assert engine.on_signal(signal).cross == []
