"""What the gateway reads: the ClickHouse tables the pipeline already writes (``cases``, ``case_transitions``,
``dispatches``, ``open311_requests``) through ``streams.storage``. Nothing here writes.

Read lag: a change shows up once the worker's ClickHouse sink has inserted it: the lifecycle agent's batch
(``CITYGRID_BATCH_SECONDS``) plus the sink's poll (≤ 0.2 s) and one INSERT: about a second on a quiet
pipeline, measured in the end-to-end test (docs/gateway.md). Until then the gateway answers for Open311
requests it accepted itself from its own memory (see ``open311.Pending``).

Queries are plain SQL that clickhouse-server 18.16 also runs; tables are read with FINAL (the latest
version of a case, no duplicates of a retried batch).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from streams.core.times import CITY_TZ
from streams.storage import Store

CASE_LIST_COLUMNS = (
    "case_id, version, updated_ms, opened_ms, category_code, category_name, departments, level, "
    "status, origin, street, community, address, reporters, light, deadline_ms, urge_count, "
    "rework_count, closed_ms, on_time, stages"
)
CASE_COLUMNS = (
    CASE_LIST_COLUMNS + ", street_code, cell, lat, lon, sources, quick_handled, dispatched_by, handling_ms, kb_version"
)
STATUSES = ("register", "dispatch", "handle", "verify", "closed", "void", "suspended")
LIGHTS = ("green", "yellow", "red")
MAX_PAGE_SIZE = 500


def iso(ms: int | None) -> str | None:
    """Epoch ms → ISO-8601 in the city's zone (with its +08:00 offset), None for 0/None."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, CITY_TZ).isoformat(timespec="seconds")


def stage_times(row: dict[str, Any]) -> dict[str, int]:
    try:
        stages = json.loads(row.get("stages") or "{}")
    except ValueError:
        return {}
    return {k: int(v) for k, v in stages.items() if isinstance(v, (int, float))}


def _seq(detail: str) -> int:
    """The engine's order of the steps of one instant (detail.seq)."""
    try:
        return int(json.loads(detail or "{}").get("seq", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


class ReadModel:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        # the drivers block: keep the event loop serving while ClickHouse answers
        return await asyncio.to_thread(self.store.query, sql, params)

    # ---------------------------------------------------------------- cases
    @staticmethod
    def _case_filter(department: str | None, stage: str | None, light: str | None) -> tuple[str, dict[str, Any]]:
        where, params = ["1 = 1"], {}
        if department:
            where.append("has(departments, %(department)s)")
            params["department"] = department
        if stage:
            where.append("status = %(stage)s")
            params["stage"] = stage
        if light:
            where.append("light = %(light)s")
            params["light"] = light
        return " AND ".join(where), params

    async def case_page(
        self, department: str | None, stage: str | None, light: str | None, page: int, page_size: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """The work queue: most urgent first (earliest deadline; cases without one last)."""
        where, params = self._case_filter(department, stage, light)
        total = await self.query(f"SELECT count() AS n FROM cases FINAL WHERE {where}", params)
        rows = await self.query(
            f"SELECT {CASE_LIST_COLUMNS} FROM cases FINAL WHERE {where} "
            f"ORDER BY deadline_ms = 0, deadline_ms, opened_ms, case_id "
            f"LIMIT {int((page - 1) * page_size)}, {int(page_size)}",
            params,
        )
        return int(total[0]["n"]) if total else 0, rows

    async def case(self, case_id: str) -> dict[str, Any] | None:
        rows = await self.query(f"SELECT {CASE_COLUMNS} FROM cases FINAL WHERE case_id = %(id)s", {"id": case_id})
        return rows[0] if rows else None

    async def history(self, case_id: str) -> list[dict[str, Any]]:
        rows = await self.query(
            "SELECT event_id, ts_ms, from_stage, to_stage, action, actor_kind, actor_id, spent_ms, clock, light, "
            "departments, detail FROM case_transitions FINAL WHERE case_id = %(id)s",
            {"id": case_id},
        )
        return sorted(rows, key=lambda r: (r["ts_ms"], _seq(r["detail"]), r["event_id"]))

    async def dispatches(self, case_ids: list[str]) -> list[dict[str, Any]]:
        if not case_ids:
            return []
        return await self.query(
            "SELECT dispatch_id, case_id, ts_ms, departments, primary_department, level, deadline_ms "
            "FROM dispatches FINAL WHERE has(%(ids)s, case_id) ORDER BY ts_ms, dispatch_id",
            {"ids": list(case_ids)},
        )

    async def cases_of_sources(self, sources: list[str]) -> dict[str, dict[str, Any]]:
        """source ('open311:<id>') → the case that holds it."""
        if not sources:
            return {}
        rows = await self.query(
            f"SELECT {CASE_COLUMNS} FROM cases FINAL WHERE arrayExists(s -> has(%(sources)s, s), sources)",
            {"sources": list(sources)},
        )
        wanted = set(sources)
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            for source in row["sources"]:
                if source in wanted:
                    found[source] = row
        return found

    # ---------------------------------------------------------------- Open311 requests
    async def requests(
        self,
        ids: list[str] | None = None,
        service_codes: list[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {}
        if ids is not None and not ids:
            return []
        if ids is not None:
            where.append("has(%(ids)s, request_id)")
            params["ids"] = list(ids)
        else:
            if service_codes:
                where.append("has(%(codes)s, service_code)")
                params["codes"] = list(service_codes)
            if start_ms is not None:
                where.append("ts_ms >= %(start)s")
                params["start"] = start_ms
            if end_ms is not None:
                where.append("ts_ms <= %(end)s")
                params["end"] = end_ms
        return await self.query(
            "SELECT request_id, ts_ms, ingest_ms, service_code, service_name, description, address, lat, lon, "
            f"media_url, client, signal_id, triage_id, street, community FROM open311_requests FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY ts_ms DESC, request_id LIMIT {int(limit)}",
            params,
        )
