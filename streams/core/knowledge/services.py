"""The city's service catalogue for citizens' apps (Open311 GeoReport v2 "services"), derived from the
taxonomy and the 责任清单: one service per category, and questions (attributes) only where the KB needs
context a citizen can give (where a noise comes from decides who handles it, seed 001).

Used by the gateway to describe the services and by the ingestor to turn the answers into context flags,
so both read the same definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import CTX_COMPOUND, CTX_DECIBEL, CTX_STALL, CTX_STREET_FRONT

# Attribute "where": the location flags a citizen can tell (the grid knows the rest, e.g. heritage).
WHERE = "where"
WHERE_OPTIONS: dict[str, str] = {
    CTX_COMPOUND: "小区内/楼内 inside a residential compound",
    CTX_STREET_FRONT: "沿街商铺 a street-front shop",
    CTX_STALL: "流动摊贩 a street stall",
    "other": "其他 elsewhere",
}
# Attribute "decibel": the citizen asks for a noise measurement 分贝检测 (adds the environment bureau).
DECIBEL = "decibel"
YES_NO: dict[str, str] = {"yes": "是 yes", "no": "否 no"}


@dataclass(frozen=True)
class Attribute:
    """One question of a service definition (Open311 ``attribute``)."""

    code: str
    description: str
    datatype: str  # singlevaluelist here
    required: bool
    order: int
    values: dict[str, str] = field(default_factory=dict)  # key -> human name


@dataclass(frozen=True)
class Service:
    code: str  # taxonomy code, e.g. E0103
    name: str  # Chinese name
    description: str
    group: str  # 部件/事件 and the national class, e.g. "事件 · 市容环境"
    keywords: list[str]
    attributes: list[Attribute]

    @property
    def metadata(self) -> bool:
        return bool(self.attributes)


def _flags_read_by_kb(knowledge: Knowledge, category_code: str) -> set[str]:
    flags: set[str] = set()
    for rule in knowledge.kb.rules.get(category_code, []):
        flags |= set(rule.when) | set(rule.add_when)
    return flags


def service_attributes(knowledge: Knowledge, category_code: str) -> list[Attribute]:
    flags = _flags_read_by_kb(knowledge, category_code)
    attributes: list[Attribute] = []
    where = [flag for flag in WHERE_OPTIONS if flag in flags]
    if where:
        values = {flag: WHERE_OPTIONS[flag] for flag in where + ["other"]}
        attributes.append(
            Attribute(
                WHERE,
                "问题发生在哪里？ Where is it? (decides who handles it)",
                "singlevaluelist",
                False,
                len(attributes) + 1,
                values,
            )
        )
    if CTX_DECIBEL in flags:
        attributes.append(
            Attribute(
                DECIBEL,
                "需要分贝检测吗？ Do you ask for a noise measurement?",
                "singlevaluelist",
                False,
                len(attributes) + 1,
                dict(YES_NO),
            )
        )
    return attributes


def catalogue(knowledge: Knowledge) -> list[Service]:
    """Every category of the taxonomy that the KB routes, in taxonomy order."""
    services = []
    for category in knowledge.taxonomy:
        if category.code not in knowledge.kb.rules:
            continue
        keywords = list(dict.fromkeys([category.name] + knowledge.kb.keywords.get(category.name, [])))
        services.append(
            Service(
                code=category.code,
                name=category.name,
                description=f"{category.name} ({category.name_en}): {category.kind}/{category.class_name}",
                group=f"{category.kind} · {category.class_name}",
                keywords=keywords,
                attributes=service_attributes(knowledge, category.code),
            )
        )
    return services


def context_of_answers(knowledge: Knowledge, category_code: str, answers: dict[str, list[str]]) -> list[str]:
    """Context flags from a request's attribute answers; answers to questions the service does not ask,
    and unknown values, are ignored (they are kept on the signal's facts, never trusted for routing)."""
    flags: list[str] = []
    asked = {a.code: a for a in service_attributes(knowledge, category_code)}
    for value in answers.get(WHERE, []) if WHERE in asked else []:
        if value in asked[WHERE].values and value != "other" and value not in flags:
            flags.append(value)
    if DECIBEL in asked and "yes" in answers.get(DECIBEL, []):
        flags.append(CTX_DECIBEL)
    return flags


def attribute_problems(knowledge: Knowledge, category_code: str, answers: dict[str, list[str]]) -> list[str]:
    """What is wrong with the answers (unknown question, value not offered, several values for a single
    choice); empty when they fit the service definition."""
    asked = {a.code: a for a in service_attributes(knowledge, category_code)}
    problems = []
    for code, values in answers.items():
        attribute = asked.get(code)
        if attribute is None:
            problems.append(f"attribute[{code}]: service {category_code} has no such attribute")
            continue
        if attribute.datatype == "singlevaluelist" and len(values) > 1:
            problems.append(f"attribute[{code}]: one value expected, got {len(values)}")
        bad = [v for v in values if v not in attribute.values]
        if bad:
            problems.append(f"attribute[{code}]: {bad} not among {sorted(attribute.values)}")
    for attribute in asked.values():
        if attribute.required and attribute.code not in answers:
            problems.append(f"attribute[{attribute.code}] is required")
    return problems
