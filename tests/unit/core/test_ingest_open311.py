"""open311.requests: a citizen's request from a civic app becomes a signal from source "open311" on the same
classify/locate/dedup/case path as a hotline call, and always leaves an open311_requests row to find it by."""

from __future__ import annotations

from typing import Any

import pytest

from streams.bus import topics
from streams.bus.codec import DecodeError, registry
from streams.core.cases.engine import CaseEngine
from streams.core.ingest import Ingestor, RejectRecord, stable_id
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import CTX_DECIBEL, CTX_STALL

INGEST_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def request(request_id: str = "sr-1", **kw: Any) -> dict[str, Any]:
    base = {
        "request_id": request_id,
        "service_code": "E0103",
        "requested_at": "2026-11-20T21:30:00+08:00",
        "client": "fixmystreet",
        "description": "楼下夜市摊贩的喇叭太吵了",
        "address_string": "钦江路101号",
    }
    base.update(kw)
    return base


def ingest(kb: Knowledge, record: dict[str, Any]):
    valid = registry().from_json(topics.RAW_SCHEMAS[topics.OPEN311_REQUESTS], record)
    result = Ingestor(kb).ingest("open311_request", valid, INGEST_MS)
    for s in result.signals:
        registry().encode("signal", s.to_dict())
    for t in result.triage:
        registry().encode("triage", t.__dict__)
    return result


def test_request_becomes_an_open311_signal_with_the_chosen_category(kb: Knowledge) -> None:
    result = ingest(
        kb,
        request(
            attributes={"where": ["stall"], "decibel": ["yes"]},
            media_url="https://example.org/p.jpg",
            reporter="citizen-abc",
        ),
    )
    [signal] = result.signals
    assert (signal.source, signal.source_kind, signal.source_id) == ("open311", "open311", "sr-1")
    assert signal.signal_id == stable_id("sig", "open311.requests", "sr-1")
    assert (signal.category_code, signal.confidence) == ("E0103", 1.0)
    assert signal.street == "虹梅街道" and signal.photos == ["https://example.org/p.jpg"]
    assert {CTX_STALL, CTX_DECIBEL} <= set(signal.context)
    assert signal.reporter_id == "citizen-abc" and signal.reporter_kind == "citizen"
    [row] = result.rows["open311_requests"]
    assert row["request_id"] == "sr-1" and row["signal_id"] == signal.signal_id and row["service_name"] == "噪声扰民"
    # the answers route it: a stall's noise goes to 城管执法中队, the measurement adds 生态环境局
    assert kb.route(signal.category_code, signal.context).departments == ["城管执法中队", "生态环境局"]


def test_the_case_engine_opens_a_case_that_lists_the_request_as_its_source(kb: Knowledge) -> None:
    [signal] = ingest(kb, request()).signals
    engine = CaseEngine(kb, {}, {}, auto_dispatch=True)
    out = engine.on_signal(signal)
    [row] = out.cases
    assert "open311:sr-1" in row["sources"] and row["origin"] == "open311" and row["status"] == "handle"


def test_unknown_place_goes_to_manual_triage_and_still_leaves_a_row(kb: Knowledge) -> None:
    result = ingest(kb, request(address_string="南京东路1号", description=None))
    assert not result.signals
    [triage] = result.triage
    assert triage.best_category == "E0103" and "unknown location" in triage.reason
    [row] = result.rows["open311_requests"]
    assert row["triage_id"] == triage.triage_id and row["signal_id"] == ""


def test_unknown_service_and_wrong_answers_are_rejected_with_the_field(kb: Knowledge) -> None:
    with pytest.raises(RejectRecord, match="service_code"):
        ingest(kb, request(service_code="X9999"))
    with pytest.raises(RejectRecord, match=r"attribute\[where\]"):
        ingest(kb, request(attributes={"where": ["moon"]}))
    with pytest.raises(RejectRecord, match=r"attribute\[colour\]"):
        ingest(kb, request(attributes={"colour": ["red"]}))


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"address_string": None}, "needs a location"),
        ({"lat": 31.17, "address_string": None}, "go together"),
        ({"description": "吵" * 4001}, "longer than 4000"),
        ({"requested_at": "2026-11-20 21:30"}, "offset"),
    ],
)
def test_schema_rules_for_the_feed(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        registry().from_json("open311_request", request(**change))
