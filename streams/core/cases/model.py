"""The shapes the case engine reads and writes: the case document and the records it emits.

They are ``TypedDict``s, not classes: at run time a case document is the plain JSON-able dict that
lives in the worker's cases table (and in ``streams replay``'s dict), and every output row is the
plain dict that goes to a ClickHouse table or a topic. The types only let mypy check the keys.

Times are epoch milliseconds (event time).
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from streams.core.cases.crowd import CrowdState


class Place(TypedDict):
    """Where one report of a case was (what dedup matches later signals against)."""

    lat: float | None
    lon: float | None
    cell: str | None
    address_key: str | None  # normalised address (dedup.normalise_address)


class Timer(TypedDict):
    """The SLA clock of the stage a case waits in (only for stages with a limit in the KB)."""

    stage: str
    seq: int                            # the case's timer_seq when started: older heap entries are stale
    start_ms: int
    clock: str                          # sla.CLOCKS
    limit_ms: int                       # grows with 延期 extensions
    suspended: list[list[int | None]]   # [start, end] of each 挂账; end is None while suspended
    yellow_fired: bool
    red_fired: bool
    deadline_ms: int
    yellow_ms: int


class ExtensionRequest(TypedDict):
    """A department's 延期 request waiting for the centre (authority policy ``requests``)."""

    minutes: int
    actor_kind: str
    actor_id: str
    ts_ms: int
    action_id: str | None
    stage: str


class CaseDoc(TypedDict):
    """A case: the value of the cases table, keyed by ``case_id``. Changed only by the engine."""

    case_id: str
    version: int                        # +1 per committed change (the cases row's ReplacingMergeTree version)
    partition: int                      # changelog partition that owns the case (it never moves)
    opened_ms: int
    updated_ms: int
    last_signal_ms: int
    # routing by the KB 责任清单
    category_code: str
    category_name: str
    departments: list[str]              # primary first
    units: NotRequired[list[str]]       # the instances serving the case, parallel to departments (not in
                                        # documents from before instances)
    level: int                          # 4 station … 1 city; escalation lowers it
    stage_limits: dict[str, list[str | int]]  # stage -> [clock, minutes]
    escalate_on_red: bool
    immediate: bool
    kb_version: str
    rule_id: str
    # the first report
    origin: str                         # source_kind of the first signal
    origin_reporter: str | None
    street: str | None
    street_code: str | None
    community: str | None
    cell: str | None
    address: str | None
    lat: float | None
    lon: float | None
    context: list[str]
    # the six-stage loop
    stage: str                          # the step waited for (lifecycle module docstring), closed or void
    open: bool
    stage_started_ms: int
    suspended_ms: int | None            # since when suspended 挂账, or None
    timer: Timer | None
    timer_seq: int
    stages: dict[str, int]              # step -> when it was last done
    lights: dict[str, str]              # stage -> worst light seen in it
    # reports merged into the case
    reporters: int
    reporter_keys: list[str]            # "{source_kind}:{reporter}"
    sources: list[str]                  # "{source_kind}:{source_id}", the first MAX_SOURCES
    signal_ids: list[str]               # the latest, for idempotency
    action_ids: list[str]               # the latest, for idempotency
    places: list[Place]
    devices: list[str]                  # sensors and cameras that reported it
    # counters and flags
    rework_count: int
    urge_count: int
    return_count: int
    escalations: int
    quick_handled: bool                 # 街镇快速处置
    dispatched_by: str                  # station | street | district
    closed_ms: int
    ever_red: bool
    accepted_ms: NotRequired[int]       # 签收 by the department
    crowd: NotRequired[CrowdState]      # a crowd case's response plan 三级响应预案 (streams.core.cases.crowd)
    duplicate_of: NotRequired[str]      # voided 作废 as a duplicate of that case across a street boundary; its
                                        # reports moved there (CaseEngine.on_void_duplicate)
    base_level: NotRequired[int]        # the KB route's level, to return to when the plan stands down
    refused_count: NotRequired[int]
    dispatch_count: NotRequired[int]
    extension_request: NotRequired[ExtensionRequest]   # a 延期 request the centre has not decided yet


class CaseAction(TypedDict):
    """A schema-valid ``case.actions`` record (schemas/case_action.avsc)."""

    action_id: str
    ts: str
    actor_kind: str
    actor_id: str
    action: str
    case_id: NotRequired[str | None]
    source_id: NotRequired[str | None]
    note: NotRequired[str | None]
    photos: NotRequired[list[str] | None]
    extend_minutes: NotRequired[int | None]
    departments: NotRequired[list[str] | None]
    # from_triage 人工分拨立案: the triage record made a case, with the category and/or place the centre set
    triage_id: NotRequired[str | None]
    category: NotRequired[str | None]
    address: NotRequired[str | None]
    lat: NotRequired[float | None]
    lon: NotRequired[float | None]


class CaseRow(TypedDict):
    """A row of the ``cases`` table (ReplacingMergeTree by ``version``)."""

    case_id: str
    version: int
    updated_ms: int
    opened_ms: int
    category_code: str
    category_name: str
    departments: list[str]
    units: list[str]
    level: int
    status: str
    origin: str
    street: str
    street_code: str
    community: str
    cell: str
    address: str
    lat: float | None
    lon: float | None
    reporters: int
    sources: list[str]
    light: str
    deadline_ms: int
    rework_count: int
    urge_count: int
    quick_handled: int
    dispatched_by: str
    closed_ms: int
    on_time: int
    handling_ms: int
    kb_version: str
    stages: str                         # JSON of CaseDoc.stages


class TransitionRow(TypedDict):
    """A row of ``case_transitions``: one applied step."""

    event_id: str
    case_id: str
    ts_ms: int
    from_stage: str
    to_stage: str
    action: str
    actor_kind: str
    actor_id: str
    spent_ms: int
    clock: str
    light: str
    category_code: str
    street: str
    departments: list[str]
    detail: str                         # JSON of Step.detail


class DispatchRow(TypedDict):
    """A row of ``dispatches`` (also the ``dispatches`` topic record)."""

    dispatch_id: str
    case_id: str
    ts_ms: int
    departments: list[str]
    primary_department: str
    units: list[str]
    primary_unit: str
    level: int
    category_code: str
    category_name: str
    street: str
    deadline_ms: int
    kb_version: str


class SlaAlertRow(TypedDict):
    """A row of ``sla_alerts``: a light change, 催办 or 上报."""

    alert_id: str
    case_id: str
    ts_ms: int
    stage: str
    light: str
    kind: str                           # sla_yellow | sla_red | urge | escalate
    departments: list[str]
    deadline_ms: int


class Rejection(TypedDict):
    """A ``case.actions.rejected`` record: an action that was not allowed, and why."""

    action_id: str
    case_id: str | None
    reason: str
    ts_ms: int
    action: str                         # JSON of the action


class Notification(TypedDict):
    """What a department is told (turned into webhook deliveries by the sinks)."""

    kind: str                           # dispatch | urge | escalate | sla_yellow | sla_red | alarm | closed
    case_id: str
    ts_ms: int
    departments: list[str]
    units: list[str]
    category_code: str
    category_name: str
    level: int
    deadline_ms: int | None
    address: str | None
    lat: float | None
    lon: float | None
    cell: str | None
    street: str | None
    event_id: str
    plan: NotRequired[dict[str, object]]   # response_level: the plan level, its name, actions and departments


class CaseSummary(TypedDict):
    """One line of ``streams replay --json``: the case as an officer reads it."""

    case_id: str
    category_name: str
    departments: list[str]
    level: int
    status: str
    stages: dict[str, str]              # step -> local ISO time it was done
    lights: dict[str, str]              # stage -> light
    reporters: int
    sources: list[str]
