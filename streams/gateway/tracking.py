"""Where a citizen's request stands: the request as filed (``open311_requests``, or the gateway's own memory
until the sink has written it), the case that holds it (``cases.sources`` has ``open311:<id>``; a request
merged into an existing case follows that case) and its latest dispatch. Shared by Open311 and the progress
page, so both say the same thing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.gateway.readmodel import ReadModel

SOURCE_KIND = "open311"
CLOSED_STATUSES = ("closed", "void")
# case status → what the citizen is told (中文 first; the progress page shows the Chinese part)
STATUS_NOTES = {
    "received": "已收到，正在受理 received, being processed",
    "triage": "人工分拨中：中心正在确认类别或地点 with the centre for manual assignment (category or place unclear)",
    "register": "已受理，等待立案 accepted, waiting to be registered",
    "dispatch": "已立案，等待派遣 registered, waiting for dispatch",
    "handle": "已派遣，处置中 dispatched, being handled",
    "verify": "已处置，核查中 handled, being verified",
    "closed": "已结案 closed",
    "void": "已作废：不属于受理范围 void: not a case for the city",
    "suspended": "挂账：暂缓处理 suspended for now",
}


def source_of(request_id: str) -> str:
    return f"{SOURCE_KIND}:{request_id}"


class Pending:
    """Requests this gateway accepted, kept until the pipeline's own rows answer for them (bounded)."""

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, request: dict[str, Any]) -> None:
        self._items[request["request_id"]] = request
        self._items.move_to_end(request["request_id"])
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self._items.get(request_id)

    def forget(self, request_id: str) -> None:
        self._items.pop(request_id, None)

    def values(self) -> list[dict[str, Any]]:
        return list(self._items.values())


@dataclass
class Tracking:
    request_id: str
    service_code: str
    service_name: str
    description: str | None
    address: str | None
    lat: float | None
    lon: float | None
    media_url: str | None
    requested_ms: int
    phase: str  # received | triage | case
    case: dict[str, Any] | None = None
    dispatch: dict[str, Any] | None = None
    street: str | None = None

    @property
    def case_status(self) -> str:
        if self.case is not None:
            return self.case["status"]
        return self.phase

    @property
    def closed(self) -> bool:
        return self.case_status in CLOSED_STATUSES

    @property
    def status(self) -> str:
        return "closed" if self.closed else "open"

    @property
    def status_notes(self) -> str:
        note = STATUS_NOTES.get(self.case_status, self.case_status)
        if self.case is not None and self.case.get("reporters", 1) > 1:
            n = self.case["reporters"]
            note += f"；同一问题共 {n} 人反映，已并案处理 ({n} reports merged into one case)"
        return note

    @property
    def agency(self) -> str | None:
        """The responsible department: the primary one of the latest dispatch (none before dispatch)."""
        if self.dispatch is not None:
            return self.dispatch["primary_department"] or None
        if self.case is not None and self.case["status"] not in ("register", "dispatch") and self.case["departments"]:
            return self.case["departments"][0]
        return None

    @property
    def updated_ms(self) -> int:
        if self.case is not None:
            return max(int(self.case["updated_ms"]), self.requested_ms)
        return self.requested_ms

    @property
    def expected_ms(self) -> int | None:
        """When the city expects it done: the handling deadline of the latest dispatch (the SLA), else the
        current stage's deadline; none once closed."""
        if self.closed:
            return None
        if self.dispatch is not None and self.dispatch["deadline_ms"]:
            return int(self.dispatch["deadline_ms"])
        if self.case is not None and self.case["deadline_ms"]:
            return int(self.case["deadline_ms"])
        return None


def _from_row(row: dict[str, Any]) -> Tracking:
    return Tracking(
        row["request_id"],
        row["service_code"],
        row["service_name"],
        row["description"] or None,
        row["address"] or None,
        row["lat"],
        row["lon"],
        row["media_url"] or None,
        int(row["ts_ms"]),
        "triage" if row["triage_id"] else "received",
        street=row.get("street") or None,
    )


def _from_pending(item: dict[str, Any]) -> Tracking:
    return Tracking(
        item["request_id"],
        item["service_code"],
        item["service_name"],
        item.get("description"),
        item.get("address_string") or item.get("address_id"),
        item.get("lat"),
        item.get("lon"),
        item.get("media_url"),
        int(item["requested_ms"]),
        "received",
    )


async def track_rows(
    model: ReadModel, rows: list[dict[str, Any]], pending: Sequence[dict[str, Any]] = ()
) -> list[Tracking]:
    """Trackings for request rows (and pending requests not written yet), each with its case and dispatch."""
    items = [_from_row(r) for r in rows]
    have = {t.request_id for t in items}
    items += [_from_pending(p) for p in pending if p["request_id"] not in have]
    cases = await model.cases_of_sources([source_of(t.request_id) for t in items])
    case_ids = sorted({c["case_id"] for c in cases.values()})
    latest: dict[str, dict[str, Any]] = {}
    for d in await model.dispatches(case_ids):
        latest[d["case_id"]] = d  # ordered by time: the last one wins
    for t in items:
        case = cases.get(source_of(t.request_id))
        if case is not None:
            t.phase, t.case, t.dispatch = "case", case, latest.get(case["case_id"])
            t.street = t.street or case.get("street") or None
    return items


async def track(model: ReadModel, pending: Pending, request_id: str) -> Tracking | None:
    rows = await model.requests(ids=[request_id])
    item = pending.get(request_id)
    if rows:
        pending.forget(request_id)  # the pipeline answers for it now
    elif item is None:
        return None
    found = await track_rows(model, rows, [item] if item is not None and not rows else [])
    return found[0] if found else None


def now_ms() -> int:
    return int(time.time() * 1000)
