"""The service catalogue citizens' apps see: one service per routed category, questions only where the KB
reads context a citizen can give."""

from __future__ import annotations

import pytest

from streams.core.knowledge.knowledge import Knowledge
from streams.core.knowledge.services import attribute_problems, catalogue, context_of_answers


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def test_every_routed_category_is_a_service_with_group_and_keywords(kb: Knowledge) -> None:
    services = {s.code: s for s in catalogue(kb)}
    assert set(services) == set(kb.kb.rules)
    noise = services["E0103"]
    assert noise.name == "噪声扰民" and noise.group == "事件 · 市容环境"
    assert {"噪声扰民", "噪音", "广场舞"} <= set(noise.keywords)
    assert services["B0101"].group == "部件 · 公用设施"


def test_noise_asks_where_it_comes_from_and_about_a_measurement(kb: Knowledge) -> None:
    noise = {s.code: s for s in catalogue(kb)}["E0103"]
    assert noise.metadata
    where, decibel = noise.attributes
    assert (where.code, decibel.code) == ("where", "decibel")
    assert set(where.values) == {"compound", "street_front", "stall", "other"}
    assert [a.order for a in noise.attributes] == [1, 2]


def test_a_category_without_context_rules_asks_nothing(kb: Knowledge) -> None:
    light = {s.code: s for s in catalogue(kb)}["B0103"]
    assert not light.metadata and light.attributes == []


def test_answers_become_flags_and_wrong_answers_are_named(kb: Knowledge) -> None:
    assert context_of_answers(kb, "E0103", {"where": ["street_front"], "decibel": ["no"]}) == ["street_front"]
    assert context_of_answers(kb, "E0103", {"where": ["other"]}) == []
    assert context_of_answers(kb, "B0103", {"where": ["stall"]}) == []  # not asked: never trusted
    assert attribute_problems(kb, "E0103", {"where": ["stall"]}) == []
    assert attribute_problems(kb, "E0103", {"where": ["stall", "compound"]}) == [
        "attribute[where]: one value expected, got 2"
    ]
