"""The departments' work API.

* ``GET /v1/cases?department=&stage=&light=&page=&page_size=`` — the work queue, most urgent first;
* ``GET /v1/cases/<case_id>`` — stages with times and lights, deadline, departments, level, history,
  dispatches;
* ``POST /v1/cases/<case_id>/actions`` — accept, handled (with photo URIs), return, extend, verify, close, …
  produced to ``case.actions`` keyed by the case. The actor is the API key's (``department:<name>``,
  ``centre``, ``station:<id>`` …), never the body's; the lifecycle decides whether the action is allowed
  and a refused one lands on ``case.actions.rejected`` with the reason.

Reads come from ClickHouse (``readmodel``); a department key sees and acts on its own department's cases only.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from streams.bus.codec import DecodeError
from streams.bus.topics import CASE_ACTIONS
from streams.core.cases.lifecycle import ACTIONS
from streams.core.model import STAGE_ZH, STAGES
from streams.core.times import CITY_TZ
from streams.gateway.feeds import field_errors
from streams.gateway.keys import ApiKey
from streams.gateway.readmodel import LIGHTS, MAX_PAGE_SIZE, STATUSES, iso, stage_times
from streams.gateway.tracking import now_ms

# The caller's key (or None), set by the gateway's middleware for the handlers.
API_KEY: Any = web.RequestKey("api_key", object) if hasattr(web, "RequestKey") else "api_key"
STATUS_ZH = {
    "register": "待立案",
    "dispatch": "待派遣",
    "handle": "处置中",
    "verify": "核查中",
    "closed": "已结案",
    "void": "已作废",
    "suspended": "挂账",
}
LIGHT_ZH = {"green": "绿灯", "yellow": "黄灯", "red": "红灯"}
SEVERITY = {"green": 0, "yellow": 1, "red": 2}
# Body fields a caller may send with an action; the rest of the case.actions record is the gateway's.
ACTION_FIELDS = {"action", "note", "photos", "extend_minutes", "departments", "action_id"}
NOT_FROM_BODY = {
    "actor_kind": "the API key",
    "actor_id": "the API key",
    "case_id": "the URL",
    "source_id": "the URL",
    "ts": "the gateway's clock",
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def case_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "case_id": row["case_id"],
        "category_code": row["category_code"],
        "category_name": row["category_name"],
        "status": row["status"],
        "status_zh": STATUS_ZH.get(row["status"], row["status"]),
        "light": row["light"],
        "level": row["level"],
        "departments": list(row["departments"]),
        "deadline": iso(row["deadline_ms"]),
        "opened": iso(row["opened_ms"]),
        "updated": iso(row["updated_ms"]),
        "origin": row["origin"],
        "street": row["street"],
        "community": row["community"],
        "address": row["address"],
        "reporters": row["reporters"],
        "urge_count": row["urge_count"],
        "rework_count": row["rework_count"],
    }


def stage_lights(row: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, str]:
    """The worst light each stage had (taken when the case left it), the current stage's from the case."""
    lights: dict[str, str] = {}
    for t in history:
        stage = t["from_stage"]
        if stage in STAGES and t["light"] in SEVERITY:
            lights[stage] = max(lights.get(stage, "green"), t["light"], key=SEVERITY.__getitem__)
    status = row["status"]
    if status in STAGES and row["light"] in SEVERITY:
        lights[status] = max(lights.get(status, "green"), row["light"], key=SEVERITY.__getitem__)
    return lights


def case_detail(row: dict[str, Any], history: list[dict[str, Any]], dispatches: list[dict[str, Any]]) -> dict[str, Any]:
    times = stage_times(row)
    lights = stage_lights(row, history)
    out = case_summary(row)
    out.update(
        {
            "stages": [
                {"stage": s, "zh": STAGE_ZH[s], "done_at": iso(times.get(s)), "light": lights.get(s)} for s in STAGES
            ],
            "closed_at": iso(row["closed_ms"]),
            "on_time": bool(row["on_time"]) if row["status"] == "closed" else None,
            "lat": row["lat"],
            "lon": row["lon"],
            "cell": row["cell"],
            "street_code": row["street_code"],
            "quick_handled": bool(row["quick_handled"]),
            "dispatched_by": row["dispatched_by"] or None,
            "kb_version": row["kb_version"],
            "sources": list(row["sources"]),
            "history": [
                {
                    "at": iso(t["ts_ms"]),
                    "from_stage": t["from_stage"] or None,
                    "to_stage": t["to_stage"],
                    "action": t["action"],
                    "actor_kind": t["actor_kind"] or None,
                    "actor_id": t["actor_id"] or None,
                    "light": t["light"] or None,
                    "spent_ms": t["spent_ms"],
                    "clock": t["clock"] or None,
                    "detail": _json_or_text(t["detail"]),
                }
                for t in history
            ],
            "dispatches": [
                {
                    "at": iso(d["ts_ms"]),
                    "departments": list(d["departments"]),
                    "primary_department": d["primary_department"],
                    "level": d["level"],
                    "deadline": iso(d["deadline_ms"]),
                }
                for d in dispatches
            ],
        }
    )
    return out


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return text


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ApiError(400, f"{name} must be within {low}..{high}, got {number}")
    return number


def readable_by(key: ApiKey, row: dict[str, Any]) -> bool:
    return key.reads_all_cases or (key.department is not None and key.department in row["departments"])


def build_action(key: ApiKey, case_id: str, body: Any) -> dict[str, Any]:
    """The case.actions record for a body, with the key's actor; ApiError(400/403) when it cannot be."""
    actor = key.actor
    if actor is None:
        raise ApiError(
            403,
            f"key {key.name!r} acts as nobody: it needs a department:<name>, centre, station:<id>, "
            "committee:<id> or inspector:<id> scope",
        )
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for name, source in NOT_FROM_BODY.items():
        if name in body:
            raise ApiError(
                400,
                f"field '{name}' comes from {source}, not from the body",
                errors=[{"field": name, "reason": f"not allowed: taken from {source}"}],
            )
    unknown = sorted(set(body) - ACTION_FIELDS)
    if unknown:
        raise ApiError(
            400, f"unknown field(s) {unknown}", errors=[{"field": f, "reason": "unknown field"} for f in unknown]
        )
    action = body.get("action")
    if action not in ACTIONS:
        raise ApiError(
            400,
            f"field 'action' must be one of {', '.join(ACTIONS)}",
            errors=[{"field": "action", "reason": f"not an action: {action!r}"}],
        )
    client_id = body.get("action_id")
    if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= 128):
        raise ApiError(400, "field 'action_id' must be a string of 1..128 characters (your id, for safe retries)")
    # the key's name namespaces the caller's ids: a retry with the same id is applied once
    action_id = f"{key.name}:{client_id}" if client_id else f"{key.name}:{case_id}:{now_ms()}:{secrets.token_hex(4)}"
    return {
        "action_id": action_id,
        "ts": datetime.now(CITY_TZ).isoformat(timespec="milliseconds"),
        "case_id": case_id,
        "source_id": None,
        "actor_kind": actor.kind,
        "actor_id": actor.id,
        "action": action,
        "note": body.get("note"),
        "photos": body.get("photos"),
        "extend_minutes": body.get("extend_minutes"),
        "departments": body.get("departments"),
    }


def routes(gateway_key: web.AppKey) -> list[web.RouteDef]:
    def reader(request: web.Request) -> ApiKey:
        key = request.get(API_KEY)
        if key is None:
            raise ApiError(401, "an API key is required (header X-Api-Key or Authorization: Bearer)")
        if not key.may_read_cases:
            raise ApiError(403, f"key {key.name!r} may not read cases (scope read, centre or department:<name>)")
        return key

    async def list_cases(request: web.Request) -> web.Response:
        key = reader(request)
        q = request.query
        department = q.get("department") or None
        if key.department is not None and not key.reads_all_cases:
            if department not in (None, key.department):
                raise ApiError(403, f"key {key.name!r} reads the cases of {key.department} only")
            department = key.department
        stage, light = q.get("stage") or None, q.get("light") or None
        if stage is not None and stage not in STATUSES:
            raise ApiError(400, f"stage must be one of {', '.join(STATUSES)}")
        if light is not None and light not in LIGHTS:
            raise ApiError(400, f"light must be one of {', '.join(LIGHTS)}")
        page = _int(q.get("page"), "page", 1, 1, 1_000_000)
        size = _int(q.get("page_size"), "page_size", 50, 1, MAX_PAGE_SIZE)
        total, rows = await request.app[gateway_key].model.case_page(department, stage, light, page, size)
        return json_response(
            {
                "page": page,
                "page_size": size,
                "total": total,
                "filters": {"department": department, "stage": stage, "light": light},
                "cases": [case_summary(r) for r in rows],
            }
        )

    async def get_case(request: web.Request) -> web.Response:
        key = reader(request)
        case_id = request.match_info["case_id"]
        model = request.app[gateway_key].model
        row = await model.case(case_id)
        if row is None or not readable_by(key, row):
            raise ApiError(404, f"case {case_id!r} not found")
        history = await model.history(case_id)
        return json_response(case_detail(row, history, await model.dispatches([case_id])))

    async def post_action(request: web.Request) -> web.Response:
        key = request.get(API_KEY)
        if key is None:
            raise ApiError(401, "an API key is required (header X-Api-Key or Authorization: Bearer)")
        g = request.app[gateway_key]
        case_id = request.match_info["case_id"]
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"not JSON: {exc}") from None
        record = build_action(key, case_id, body)
        try:
            valid = g.codec.from_json("case_action", record)
        except DecodeError as exc:
            raise ApiError(400, str(exc), errors=field_errors(g.codec, "case_action", record, exc)) from None
        row = await g.model.case(case_id)
        if row is None or not (key.reads_all_cases or key.department is None or key.department in row["departments"]):
            raise ApiError(404, f"case {case_id!r} not found (a case opened a moment ago may not be stored yet: retry)")
        await g.produce_one(CASE_ACTIONS, case_id.encode(), g.codec.encode("case_action", valid))
        g.metrics.actions.labels(action=valid["action"], actor_kind=valid["actor_kind"]).inc()
        return json_response(
            {
                "status": "queued",
                "action_id": valid["action_id"],
                "case_id": case_id,
                "action": valid["action"],
                "actor": {"kind": valid["actor_kind"], "id": valid["actor_id"]},
                "outcome": f"applied actions appear in GET /v1/cases/{case_id} (history); "
                "refused ones go to case.actions.rejected with the reason",
            },
            status=202,
        )

    return [
        web.get("/v1/cases", list_cases),
        web.get("/v1/cases/{case_id}", get_case),
        web.post("/v1/cases/{case_id}/actions", post_action),
    ]
