"""The six-stage case state machine 发现→立案→派遣→处置→核查→结案, over plain case documents.

A case document is a JSON-able dict (it lives in a Faust table in the worker). ``doc["stage"]`` is
the step the case is waiting for:

    register 立案 → dispatch 派遣 → handle 处置 → verify 核查 → close 结案 → closed | void

(``discover`` 发现 is done when the first signal arrives). ``doc["stages"][s]`` is when step ``s``
was last done. Side paths: return 退单 (handle → dispatch), escalate 上报 (level 4→3→2→1, back to
dispatch at the higher centre, which dispatches down: 双向联动派发), extend 延期, suspend/resume
挂账 (the SLA clock stops), void 作废, verify_fail/refuse_close → rework 返工 (counted), urge 催办.

Rules: no close without a passed verification; who may take an action is the KB's authority
policy (streams.core.cases.authority: a department only on cases dispatched to it; "谁发单、谁验收、
谁结案": a case opened by a residential station or committee is verified and closed only by that
reporter; 延期 from a department is a request the centre grants or denies; the centre accepts,
voids and escalates); an inspector's report handled on the spot with before/after photos goes
straight to verification; the street centre may handle a case itself (街镇快速处置,
``quick_handled``). An action that is not allowed raises :class:`Rejected` with the reason and
changes nothing.

Each stage with a limit in the KB has a timer in ``doc["timer"]`` (clock, limit, suspended
intervals, yellow/deadline instants and whether yellow/red already fired), so lights survive restarts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from streams.core.cases import sla
from streams.core.cases.authority import ActorPolicy, NotAuthorised
from streams.core.cases.model import CaseAction, CaseDoc, ExtensionRequest, Timer
from streams.core.model import STAGES

# Stages a case waits in while open, in order (discover is instantaneous).
OPEN_STAGES = STAGES[1:]  # register, dispatch, handle, verify, close
CLOSED, VOID = "closed", "void"
STATUS_SUSPENDED = "suspended"

ACTIONS = ("accept", "handled", "verify_pass", "verify_fail", "close", "refuse_close", "return",
           "escalate", "urge", "extend", "deny_extend", "suspend", "resume", "void", "dispatch",
           "step_down")   # 降级: the engine applies it (it needs the KB's crowd plans), see CaseEngine.step_down

# Sources whose reporter files the case himself (立案 on receipt): grid inspectors, residential
# stations and committees; devices and registries are registered automatically. Hotline calls wait
# for the centre to accept them.
SELF_REGISTERING = ("inspector", "station", "committee", "camera", "sensor", "registry")

STATION_DEPARTMENT = "居民区工作站"
STREET_CENTRE = "街道网格中心"
DISTRICT_CENTRE = "区网格中心"


class Rejected(Exception):
    """An action that is not allowed in the case's state; ``reason`` says why (for case.actions.rejected)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Step:
    """One applied change of a case: becomes a case_transitions row (and maybe more)."""

    ts_ms: int
    from_stage: str
    to_stage: str
    action: str
    actor_kind: str
    actor_id: str
    spent_ms: int = 0      # time spent in from_stage, in that stage's clock (suspensions excluded)
    clock: str = ""
    light: str = sla.GREEN
    detail: dict[str, object] = field(default_factory=dict)  # JSON-able facts of the step
    notify: list[str] = field(default_factory=list)   # notification kinds: dispatch, urge, escalate, closed
    dispatched: bool = False


def status_of(doc: CaseDoc) -> str:
    """The ``status`` column: the stage waited for, or closed / void / suspended.
    After a passed verification the case waits for the originator's 结案 and still shows ``verify``."""
    if doc.get("suspended_ms") is not None:
        return STATUS_SUSPENDED
    stage = doc["stage"]
    return "verify" if stage == "close" else stage


def dispatched_by_for(level: int) -> str:
    return {4: "station", 3: "street"}.get(level, "district")


# ---------------------------------------------------------------- timers


def start_timer(doc: CaseDoc, stage: str, ts_ms: int, calendar: sla.WorkCalendar) -> None:
    """Enter ``stage`` at ts: a fresh timer when the KB gives the stage a limit."""
    doc["stage"] = stage
    doc["stage_started_ms"] = ts_ms
    doc["timer_seq"] = doc.get("timer_seq", 0) + 1
    doc.pop("extension_request", None)   # a 延期 request was for the stage the case has left
    limit = doc.get("stage_limits", {}).get(stage)
    if not limit:
        doc["timer"] = None
        return
    clock, minutes = str(limit[0]), int(limit[1])
    # deadline_ms and yellow_ms are set by _schedule
    timer: Timer = {"stage": stage, "seq": doc["timer_seq"], "start_ms": ts_ms, "clock": clock,
                    "limit_ms": minutes * sla.MINUTE_MS, "suspended": [], "yellow_fired": False, "red_fired": False,
                    "deadline_ms": 0, "yellow_ms": 0}
    _schedule(timer, ts_ms, calendar)
    doc["timer"] = timer


def suspensions(timer: Timer) -> list[tuple[int, int]]:
    """The timer's finished suspensions 挂账 as (start, end); the clock is only read outside a suspension."""
    intervals: list[tuple[int, int]] = []
    for start, end in timer["suspended"]:
        if start is None or end is None:
            raise ValueError(f"timer of stage {timer['stage']} is still suspended since {start}")
        intervals.append((start, end))
    return intervals


def _schedule(timer: Timer, now_ms: int, calendar: sla.WorkCalendar) -> None:
    """(Re)compute the yellow and deadline instants from the clock time already used at now."""
    used = sla.elapsed_ms(timer["start_ms"], now_ms, timer["clock"], suspensions(timer), calendar)
    limit = timer["limit_ms"]
    timer["deadline_ms"] = sla.deadline_ms(now_ms, timer["clock"], max(0, limit - used), calendar)
    yellow_at = sla.yellow_amount_ms(limit)
    timer["yellow_ms"] = sla.deadline_ms(now_ms, timer["clock"], max(0, yellow_at - used), calendar)


def timer_light(timer: Timer | None, at_ms: int) -> str:
    """Light of a timer at an instant: red when past the deadline, yellow from 80% of the limit."""
    if timer is None:
        return sla.GREEN
    if at_ms > timer["deadline_ms"] or timer.get("red_fired"):
        return sla.RED
    if at_ms >= timer["yellow_ms"] or timer.get("yellow_fired"):
        return sla.YELLOW
    return sla.GREEN


def _leave_stage(doc: CaseDoc, ts_ms: int, calendar: sla.WorkCalendar) -> tuple[int, str, str]:
    """Close the current stage's timer: (spent in its clock, clock, light); the light is kept per stage."""
    timer = doc.get("timer")
    stage = doc["stage"]
    if timer is None:
        spent = max(0, ts_ms - doc.get("stage_started_ms", ts_ms))
        return spent, sla.CALENDAR_DAYS, sla.GREEN
    spent = sla.elapsed_ms(timer["start_ms"], ts_ms, timer["clock"], suspensions(timer), calendar)
    lit = timer_light(timer, ts_ms)
    lights = doc.setdefault("lights", {})
    lights[stage] = sla.worst(lights.get(stage, sla.GREEN), lit)
    if lit == sla.RED:
        doc["ever_red"] = True
    return spent, timer["clock"], lit


def move(doc: CaseDoc, to_stage: str, action: str, actor_kind: str, actor_id: str, ts_ms: int,
         calendar: sla.WorkCalendar, done: str | None = None, **detail: object) -> Step:
    """Leave the current stage for ``to_stage``; ``done`` names the step whose time is recorded."""
    from_stage = doc["stage"]
    spent, clock, lit = _leave_stage(doc, ts_ms, calendar)
    if done:
        doc.setdefault("stages", {})[done] = ts_ms
    if to_stage in (CLOSED, VOID):
        doc["stage"] = to_stage
        doc["timer"] = None
        doc["open"] = False
    else:
        start_timer(doc, to_stage, ts_ms, calendar)
    return Step(ts_ms, from_stage, to_stage, action, actor_kind, actor_id, spent, clock, lit,
                {k: v for k, v in detail.items() if v is not None})


def stay(doc: CaseDoc, action: str, actor_kind: str, actor_id: str, ts_ms: int, **detail: object) -> Step:
    """An applied action that keeps the stage (urge, extend, accept by the department ...)."""
    stage = doc["stage"]
    timer = doc.get("timer")
    lit = timer_light(timer, ts_ms)
    clock = timer["clock"] if timer else ""
    return Step(ts_ms, stage, stage, action, actor_kind, actor_id, 0, clock, lit,
                {k: v for k, v in detail.items() if v is not None})


# ---------------------------------------------------------------- who may act
# The authority section of the KB (streams.core.cases.authority) decides who may take an action;
# the checks below only ask whether the case's state allows it.


# ---------------------------------------------------------------- actions


def apply_action(doc: CaseDoc, action: CaseAction, ts_ms: int, calendar: sla.WorkCalendar,
                 policy: ActorPolicy) -> list[Step]:
    """Apply a schema-valid case.actions record to the case document (in place) or raise Rejected.

    The actor is checked against the authority ``policy`` first (an actor who may not act on the
    case learns nothing more about it), then the case's state. The document is changed only when no
    exception is raised (checks come before changes)."""
    name = action["action"]
    kind, actor = action["actor_kind"], action["actor_id"]
    stage = doc["stage"]
    note = action.get("note")
    if name not in ACTIONS:
        raise Rejected(f"unknown action {name!r}; expected one of {', '.join(ACTIONS)}")
    if stage in (CLOSED, VOID):
        raise Rejected(f"case is {stage}; no action is allowed")
    try:
        decision = policy.decide(doc, kind, actor, name)
    except NotAuthorised as exc:
        raise Rejected(exc.reason) from None
    roles = decision.roles
    if ts_ms < doc.get("stage_started_ms", 0):
        raise Rejected(f"action time {ts_ms} is before the current stage {stage} began ({doc['stage_started_ms']})")
    suspended_since = doc.get("suspended_ms")
    suspended = suspended_since is not None
    if suspended and name not in ("resume", "void", "urge"):
        raise Rejected(f"case is suspended (挂账) since {doc['suspended_ms']}; resume it before '{name}'")

    if name == "step_down":
        raise Rejected("'step_down' is applied by the case engine (CaseEngine.step_down)")

    if name == "accept":
        if stage == "register":
            return [move(doc, "dispatch", "accept", kind, actor, ts_ms, calendar, done="register", note=note)]
        if stage == "handle":
            doc["accepted_ms"] = ts_ms  # 签收
            return [stay(doc, "accept", kind, actor, ts_ms, note=note)]
        raise Rejected(f"'accept' is not allowed in stage {stage}")

    if name == "dispatch":
        if stage not in ("register", "dispatch", "handle"):
            raise Rejected(f"'dispatch' is not allowed in stage {stage}")
        departments = list(action.get("departments") or doc.get("departments") or [])
        if not departments:
            raise Rejected("dispatch without departments and the KB gave none")
        steps: list[Step] = []
        if stage == "register":
            steps.append(move(doc, "dispatch", "accept", kind, actor, ts_ms, calendar, done="register"))
        steps.append(dispatch(doc, departments, kind, actor, ts_ms, calendar, note=note))
        return steps

    if name == "handled":
        if stage == "handle" and "department" in roles:
            photos = action.get("photos")
            return [move(doc, "verify", "handled", kind, actor, ts_ms, calendar, done="handle",
                         note=note, photos=photos)]
        if stage in ("dispatch", "handle") and "centre" in roles and doc.get("level", 3) >= 3:
            # 街镇快速处置: the street centre handles it itself
            doc["quick_handled"] = True
            if stage == "dispatch":
                doc.setdefault("stages", {})["dispatch"] = ts_ms
            return [move(doc, "verify", "handled", kind, actor, ts_ms, calendar, done="handle",
                         note=note, quick=True)]
        if stage != "handle":
            raise Rejected(f"'handled' is not allowed in stage {stage}: the case is not being handled")
        raise Rejected(f"the centre handles a case itself (街镇快速处置) only at level 3 or 4, not {doc.get('level')}; "
                       f"its departments {doc.get('departments')} report it handled")

    if name in ("verify_pass", "verify_fail"):
        if stage != "verify":
            raise Rejected(f"'{name}' is not allowed in stage {stage}: nothing reported handled to verify")
        if name == "verify_pass":
            return [move(doc, "close", "verify_pass", kind, actor, ts_ms, calendar, done="verify", note=note)]
        doc["rework_count"] = doc.get("rework_count", 0) + 1  # 返工
        step = move(doc, "handle", "verify_fail", kind, actor, ts_ms, calendar, note=note,
                    rework=doc["rework_count"])
        step.notify.append("urge")
        return [step]

    if name == "close":
        if stage != "close":
            raise Rejected("no close without a passed verification 核查 (哪个环节不到位，就不能结案)")
        step = move(doc, CLOSED, "close", kind, actor, ts_ms, calendar, done="close", note=note)
        doc["closed_ms"] = ts_ms
        step.notify.append("closed")
        return [step]

    if name == "refuse_close":
        if stage not in ("verify", "close"):
            raise Rejected(f"'refuse_close' is not allowed in stage {stage}: nothing awaits closure")
        doc["rework_count"] = doc.get("rework_count", 0) + 1
        doc["refused_count"] = doc.get("refused_count", 0) + 1
        doc.get("stages", {}).pop("verify", None)
        step = move(doc, "handle", "refuse_close", kind, actor, ts_ms, calendar, note=note,
                    rework=doc["rework_count"])
        step.notify.append("urge")
        return [step]

    if name == "return":
        if stage != "handle":
            raise Rejected(f"'return' 退单 is only allowed while the case is being handled, not in {stage}")
        doc["return_count"] = doc.get("return_count", 0) + 1
        return [move(doc, "dispatch", "return", kind, actor, ts_ms, calendar, note=note)]

    if name == "escalate":
        if stage not in ("register", "dispatch", "handle"):
            raise Rejected(f"'escalate' is not allowed in stage {stage}")
        if doc.get("level", 4) <= 1:
            raise Rejected("the case is already at level 1 (市级); it cannot be escalated further")
        doc["level"] = doc.get("level", 4) - 1
        doc["escalations"] = doc.get("escalations", 0) + 1
        if stage == "register":
            doc.setdefault("stages", {})["register"] = ts_ms
        step = move(doc, "dispatch", "escalate", kind, actor, ts_ms, calendar, note=note, level=doc["level"])
        step.notify.append("escalate")
        return [step]

    if name == "urge":
        doc["urge_count"] = doc.get("urge_count", 0) + 1
        step = stay(doc, "urge", kind, actor, ts_ms, note=note)
        step.notify.append("urge")
        return [step]

    if name == "extend":
        timer = doc.get("timer")
        pending = doc.get("extension_request")
        if decision.request:
            # 延期申请: a department asks; the centre grants (extend) or refuses (deny_extend)
            minutes = action.get("extend_minutes")
            if not minutes or minutes <= 0:
                raise Rejected("an 'extend' 延期 request needs a positive extend_minutes")
            if timer is None:
                raise Rejected(f"stage {stage} has no time limit to extend")
            if pending:
                raise Rejected(f"an extension request by {pending['actor_id']} is already waiting for the centre")
            request: ExtensionRequest = {"minutes": int(minutes), "actor_kind": kind, "actor_id": actor,
                                         "ts_ms": ts_ms, "action_id": action.get("action_id"), "stage": stage}
            doc["extension_request"] = request
            return [stay(doc, "extend_request", kind, actor, ts_ms, note=note, extend_minutes=int(minutes))]
        minutes = action.get("extend_minutes")
        if minutes is None and pending:
            minutes = pending["minutes"]   # granted as asked
        if not minutes or minutes <= 0:
            raise Rejected("'extend' 延期 needs a positive extend_minutes (or a pending request to grant)")
        if timer is None:
            raise Rejected(f"stage {stage} has no time limit to extend")
        timer["limit_ms"] += int(minutes) * sla.MINUTE_MS
        _schedule(timer, ts_ms, calendar)
        doc.pop("extension_request", None)
        return [stay(doc, "extend", kind, actor, ts_ms, note=note, extend_minutes=minutes,
                     deadline_ms=timer["deadline_ms"], requested_by=pending["actor_id"] if pending else None)]

    if name == "deny_extend":
        pending = doc.get("extension_request")
        if not pending:
            raise Rejected("no extension request 延期申请 is waiting to be denied")
        doc.pop("extension_request", None)
        return [stay(doc, "deny_extend", kind, actor, ts_ms, note=note, requested_by=pending["actor_id"],
                     extend_minutes=pending["minutes"])]

    if name == "suspend":
        if suspended:
            raise Rejected("case is already suspended (挂账)")
        doc["suspended_ms"] = ts_ms
        timer = doc.get("timer")
        if timer:
            timer["suspended"].append([ts_ms, None])
        return [Step(ts_ms, stage, STATUS_SUSPENDED, "suspend", kind, actor, 0,
                     timer["clock"] if timer else "", timer_light(timer, ts_ms),
                     {"note": note} if note else {})]

    if name == "resume":
        if suspended_since is None:
            raise Rejected("case is not suspended; nothing to resume")
        since = suspended_since
        doc["suspended_ms"] = None
        timer = doc.get("timer")
        if timer:
            timer["suspended"][-1] = [since, max(since, ts_ms)]
            _schedule(timer, ts_ms, calendar)
        return [Step(ts_ms, STATUS_SUSPENDED, stage, "resume", kind, actor, max(0, ts_ms - since),
                     sla.CALENDAR_DAYS, timer_light(timer, ts_ms), {"note": note} if note else {})]

    if name == "void":
        if suspended_since is not None:
            timer = doc.get("timer")
            if timer:
                timer["suspended"][-1] = [suspended_since, max(suspended_since, ts_ms)]
            doc["suspended_ms"] = None
        return [move(doc, VOID, "void", kind, actor, ts_ms, calendar, note=note)]

    raise Rejected(f"action {name!r} is not handled")  # pragma: no cover - ACTIONS is exhaustive


def dispatch(doc: CaseDoc, departments: list[str], actor_kind: str, actor_id: str, ts_ms: int,
             calendar: sla.WorkCalendar, **detail: object) -> Step:
    """派遣: to the departments (primary first); dispatch → handle."""
    doc["departments"] = departments
    doc["dispatched_by"] = dispatched_by_for(doc.get("level", 3))
    doc["dispatch_count"] = doc.get("dispatch_count", 0) + 1
    step = move(doc, "handle", "dispatch", actor_kind, actor_id, ts_ms, calendar, done="dispatch",
                departments=departments, level=doc.get("level"), **detail)
    step.dispatched = True
    step.notify.append("dispatch")
    return step
