"""HTTP views on the worker's Faust web server: the wall summary the live view shows."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from faust import web


def register_views(pipeline: Any, store: Any) -> None:
    from streams.wall.queries import wall_summary

    cache: dict[str, Any] = {"at": 0.0, "data": None}
    lock = asyncio.Lock()

    @pipeline.app.page("/wall/")
    class Wall(web.View):
        """The operations wall's headline queries, as JSON (the same SQL Grafana runs)."""

        async def get(self, request: web.Request) -> web.Response:
            async with lock:  # one query set at a time, shared by every viewer for a second
                if time.monotonic() - cache["at"] > 1.0:
                    cache["data"] = await asyncio.to_thread(wall_summary, store)
                    cache["at"] = time.monotonic()
            return self.json(cache["data"])

    @pipeline.app.page("/health/")
    class Health(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"ok": True, "app": pipeline.settings.app_id})
