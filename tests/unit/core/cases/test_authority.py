"""The authority policy of the KB (who may take which action on which case), rule by rule, through the
engine: every listed actor is tried on a fresh case; only the allowed ones get through, the others are
refused with a reason (what goes to case.actions.rejected). Plus the loader's validation."""
from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.cases.authority import PolicyError, parse_policy
from streams.core.cases.engine import CaseEngine
from streams.core.cases.lifecycle import ACTIONS, OPEN_STAGES
from streams.core.knowledge.knowledge import DATA_DIR, Knowledge, packaged_policy
from streams.core.knowledge.taxonomy import DataError
from tests.unit.core.cases.support import KnowledgeDouble, action, signal

CENTRE = ("center", "街道网格中心")
DEPT = ("department", "城管执法中队")          # the department 占道经营 is dispatched to
OTHER_DEPT = ("department", "房管办")
CENTRE_AS_NAME = ("center", "区网格中心")
STATION = ("station", "STA-1")
OTHER_STATION = ("station", "STA-2")
COMMITTEE = ("committee", "CMT-1")
OTHER_COMMITTEE = ("committee", "CMT-2")
INSPECTOR = ("inspector", "INS-1")
OTHER_INSPECTOR = ("inspector", "INS-2")
ACTORS = [CENTRE, CENTRE_AS_NAME, DEPT, OTHER_DEPT, STATION, OTHER_STATION, COMMITTEE, OTHER_COMMITTEE,
          INSPECTOR, OTHER_INSPECTOR]
REPORTER = {"12345": None, "station": STATION[1], "committee": COMMITTEE[1], "inspector": INSPECTOR[1]}
CLOSER = {"12345": CENTRE, "station": STATION, "committee": COMMITTEE, "inspector": CENTRE}


def case_in(stage: str, origin: str = "12345", *, suspended: bool = False,
            extension_asked: bool = False) -> tuple[CaseEngine, str]:
    """A 占道经营 case (城管执法中队, level 3) reported by ``origin``, brought to ``stage`` by allowed actors."""
    e = CaseEngine(KnowledgeDouble(), {}, {})
    out = e.on_signal(signal("占道经营", "2026-11-02 09:00", origin, reporter_id=REPORTER[origin]))
    cid = out.cases[-1]["case_id"]
    path = [("register", "accept", CENTRE, {}), ("dispatch", "dispatch", CENTRE, {}),
            ("handle", "handled", DEPT, {}), ("verify", "verify_pass", CLOSER[origin], {})]
    minute = 1
    for at, name, actor, extra in path:
        if e.cases[cid]["stage"] == stage:
            break
        if e.cases[cid]["stage"] != at:
            continue   # a self-registering report skips 立案
        minute += 1
        rejected = e.on_action(action(cid, name, f"2026-11-02 09:{minute:02d}", *actor, **extra)).rejections
        assert not rejected, rejected
    assert e.cases[cid]["stage"] == stage
    if suspended:
        assert not e.on_action(action(cid, "suspend", "2026-11-02 09:30", *CENTRE)).rejections
    if extension_asked:
        assert not e.on_action(action(cid, "extend", "2026-11-02 09:31", *DEPT, extend_minutes=60)).rejections
    return e, cid


RULES = [
    # (rule, origin, stage, action, extra, allowed actors)
    ("the centre registers 立案 a hotline call", "12345", "register", "accept", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the centre dispatches 派遣", "12345", "dispatch", "dispatch", {}, {CENTRE, CENTRE_AS_NAME}),
    ("its department signs for 签收 a dispatched case", "12345", "handle", "accept", {}, {DEPT}),
    ("its department (or the centre itself: 街镇快速处置) reports it handled", "12345", "handle", "handled", {},
     {DEPT, CENTRE, CENTRE_AS_NAME}),
    ("only its department returns 退单 a case", "12345", "handle", "return", {}, {DEPT}),
    ("the centre (or the grid inspector it sends) verifies 核查 a hotline case", "12345", "verify", "verify_pass", {},
     {CENTRE, CENTRE_AS_NAME, INSPECTOR, OTHER_INSPECTOR}),
    ("the centre (or its inspector) fails a verification 返工", "12345", "verify", "verify_fail", {},
     {CENTRE, CENTRE_AS_NAME, INSPECTOR, OTHER_INSPECTOR}),
    ("the centre closes 结案 a hotline case", "12345", "close", "close", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the reporting station verifies its own case (no inspector, no centre)", "station", "verify", "verify_pass",
     {}, {STATION}),
    ("the reporting station fails its own case's verification", "station", "verify", "verify_fail", {}, {STATION}),
    ("the reporting station closes its own case", "station", "close", "close", {}, {STATION}),
    ("the reporting station refuses to close its own case", "station", "close", "refuse_close", {}, {STATION}),
    ("the reporting committee verifies its own case", "committee", "verify", "verify_pass", {}, {COMMITTEE}),
    ("the reporting committee closes its own case", "committee", "close", "close", {}, {COMMITTEE}),
    ("an inspector's case: the centre or a grid inspector verifies", "inspector", "verify", "verify_pass", {},
     {CENTRE, CENTRE_AS_NAME, INSPECTOR, OTHER_INSPECTOR}),
    ("an inspector's case: the centre or that inspector closes", "inspector", "close", "close", {},
     {CENTRE, CENTRE_AS_NAME, INSPECTOR}),
    ("the centre escalates 上报", "12345", "handle", "escalate", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the centre urges 催办", "12345", "handle", "urge", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the centre suspends 挂账", "12345", "handle", "suspend", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the centre voids 作废", "12345", "handle", "void", {}, {CENTRE, CENTRE_AS_NAME}),
    ("the centre voids a station's case too", "station", "dispatch", "void", {}, {CENTRE, CENTRE_AS_NAME}),
]


@pytest.mark.parametrize("rule, origin, stage, name, extra, allowed", RULES, ids=[r[0] for r in RULES])
def test_rule(rule: str, origin: str, stage: str, name: str, extra: dict, allowed: set) -> None:
    for actor in ACTORS:
        e, cid = case_in(stage, origin)
        before = e.cases[cid]
        out = e.on_action(action(cid, name, "2026-11-02 10:00", *actor, **extra))
        if actor in allowed:
            assert not out.rejections, f"{rule}: {actor} was refused: {out.rejections}"
            assert out.case_transitions[0]["actor_id"] == actor[1]
        else:
            assert out.rejections, f"{rule}: {actor} got through"
            assert out.rejections[0]["reason"].startswith("not authorised: "), out.rejections[0]["reason"]
            assert e.cases[cid] == before, "a refused action changes nothing"


def test_the_centre_resumes_a_suspended_case() -> None:
    for actor in ACTORS:
        e, cid = case_in("handle", suspended=True)
        out = e.on_action(action(cid, "resume", "2026-11-02 10:00", *actor))
        assert bool(out.rejections) == (actor not in (CENTRE, CENTRE_AS_NAME)), actor


def test_a_department_acts_only_on_cases_dispatched_to_it() -> None:
    e, cid = case_in("dispatch")   # proposed by the KB for 城管执法中队, not yet dispatched
    out = e.on_action(action(cid, "handled", "2026-11-02 10:00", *DEPT))
    assert "the case has not been dispatched yet" in out.rejections[0]["reason"]
    e, cid = case_in("handle")
    out = e.on_action(action(cid, "handled", "2026-11-02 10:00", *OTHER_DEPT))
    assert "the case is not dispatched to 房管办" in out.rejections[0]["reason"]
    # after a return and a re-dispatch to another department, the first one may no longer act
    assert not e.on_action(action(cid, "return", "2026-11-02 10:01", *DEPT)).rejections
    assert not e.on_action(action(cid, "dispatch", "2026-11-02 10:02", *CENTRE, departments=["房管办"])).rejections
    out = e.on_action(action(cid, "handled", "2026-11-02 10:03", *DEPT))
    assert "the case is not dispatched to 城管执法中队" in out.rejections[0]["reason"]
    assert not e.on_action(action(cid, "handled", "2026-11-02 10:04", *OTHER_DEPT)).rejections


def test_extension_is_a_request_the_centre_grants() -> None:
    e, cid = case_in("handle")
    deadline = e.cases[cid]["timer"]["deadline_ms"]
    out = e.on_action(action(cid, "extend", "2026-11-02 10:00", *DEPT, extend_minutes=120, note="需协调产权单位"))
    assert [t["action"] for t in out.case_transitions] == ["extend_request"]
    assert e.cases[cid]["timer"]["deadline_ms"] == deadline, "a request moves no deadline"
    again = e.on_action(action(cid, "extend", "2026-11-02 10:01", *DEPT, extend_minutes=30))
    assert "already waiting for the centre" in again.rejections[0]["reason"]
    out = e.on_action(action(cid, "extend", "2026-11-02 10:02", *CENTRE))
    assert out.case_transitions[0]["action"] == "extend" and e.cases[cid]["timer"]["deadline_ms"] > deadline
    assert "extension_request" not in e.cases[cid]


def test_the_centre_may_deny_an_extension_request() -> None:
    for actor in ACTORS:
        e, cid = case_in("handle", extension_asked=True)
        deadline = e.cases[cid]["timer"]["deadline_ms"]
        out = e.on_action(action(cid, "deny_extend", "2026-11-02 10:00", *actor))
        if actor in (CENTRE, CENTRE_AS_NAME):
            assert out.case_transitions[0]["action"] == "deny_extend"
            assert "extension_request" not in e.cases[cid] and e.cases[cid]["timer"]["deadline_ms"] == deadline
        else:
            assert out.rejections[0]["reason"].startswith("not authorised")
    e, cid = case_in("handle")
    denied = e.on_action(action(cid, "deny_extend", "2026-11-02 10:00", *CENTRE))
    assert "no extension request" in denied.rejections[0]["reason"]


def test_an_extension_request_lapses_when_the_stage_moves_on() -> None:
    e, cid = case_in("handle", extension_asked=True)
    assert not e.on_action(action(cid, "handled", "2026-11-02 10:00", *DEPT)).rejections
    assert "extension_request" not in e.cases[cid]


def test_nobody_else_may_ask_for_an_extension() -> None:
    for actor in (STATION, COMMITTEE, INSPECTOR, OTHER_DEPT):
        e, cid = case_in("handle")
        out = e.on_action(action(cid, "extend", "2026-11-02 10:00", *actor, extend_minutes=60))
        assert "may request it" in out.rejections[0]["reason"], actor


def test_a_refusal_names_who_may_act() -> None:
    e, cid = case_in("close", "committee")
    reason = e.on_action(action(cid, "close", "2026-11-02 10:00", *CENTRE)).rejections[0]["reason"]
    assert reason == ("not authorised: center 街道网格中心 may not 'close' this case; only the reporting committee "
                      "CMT-1 may (谁发单、谁验收、谁结案)")


# ---------------------------------------------------------------- loading and validation

def test_the_packaged_kb_carries_the_policy() -> None:
    policy = Knowledge.load().policy
    assert policy == packaged_policy()
    assert policy.requests == {"extend": frozenset({"department"})}
    e, cid = case_in("verify", "committee")
    assert policy.closer_of(e.cases[cid]) == ("committee", COMMITTEE[1])
    e, cid = case_in("verify")
    assert policy.closer_of(e.cases[cid]) == ("center", None)
    assert policy.originator_closes == {"station", "committee"}


@pytest.mark.parametrize("change, field, problem", [
    ("    void: [centre]                                       # 作废", "authority.actions.void",
     "unknown role 'centr'"),
    ("    dispatch: [centre]                                   # 派遣 (and re-dispatch after 退单 or 上报)",
     "authority.actions", "no entry for action(s) dispatch"),
    ("    accept: {register: [centre], handle: [department]}   # 立案 by the centre; 签收 by its department",
     "authority.actions.accept.registr", "unknown stage 'registr'"),
    ("    extend: [department]                                 # ... asked for by the department",
     "authority.requests.urge", "cannot be requested"),
])
def test_a_bad_policy_names_file_line_and_field(tmp_path: Path, change: str, field: str, problem: str) -> None:
    replacement = {
        "authority.actions.void": "    void: [centr]",
        "authority.actions": "",
        "authority.actions.accept.registr": "    accept: {registr: [centre], handle: [department]}",
        "authority.requests.urge": "    urge: [department]",
    }[field]
    text = (DATA_DIR / "kb.yaml").read_text(encoding="utf-8")
    assert change in text
    path = tmp_path / "kb.yaml"
    path.write_text(text.replace(change, replacement), encoding="utf-8")
    with pytest.raises(DataError) as info:
        Knowledge.load(kb_path=path)
    err = info.value
    assert problem in err.problem and err.path == str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if field == "authority.actions":   # a missing entry: the line of the actions block
        assert err.field == "authority.actions" and err.line > lines.index("authority:")
    else:
        assert lines[err.line - 1] == replacement, (err.field, lines[err.line - 1])


def test_parse_policy_refuses_unknown_actions_and_originator_kinds() -> None:
    base = {"actions": {a: ["centre"] for a in ACTIONS}}
    with pytest.raises(PolicyError, match="unknown action 'close_all'"):
        parse_policy({"actions": {**base["actions"], "close_all": ["centre"]}}, ACTIONS, OPEN_STAGES)
    with pytest.raises(PolicyError, match="reporter kinds"):
        parse_policy({**base, "originator_closes": ["camera"]}, ACTIONS, OPEN_STAGES)
    with pytest.raises(PolicyError, match="unknown key"):
        parse_policy({**base, "roles": {}}, ACTIONS, OPEN_STAGES)
    assert parse_policy(base, ACTIONS, OPEN_STAGES).originator_closes == frozenset()
