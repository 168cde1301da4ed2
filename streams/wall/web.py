"""HTTP views on the worker's Faust web server: the wall summary the live view shows."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

import faust
from faust import web

from streams.settings import Settings
from streams.wall.queries import QueryStore, WallSummary, wall_summary


class WorkerLike(Protocol):
    """What the views need of the worker's pipeline: its Faust app and its settings."""

    @property
    def app(self) -> faust.App: ...

    @property
    def settings(self) -> Settings: ...


class _Cache:
    """The latest wall summary and when it was read (monotonic seconds)."""

    def __init__(self) -> None:
        self.at = 0.0
        self.data: WallSummary | None = None


def register_views(pipeline: WorkerLike, store: QueryStore) -> None:
    cache = _Cache()
    lock = asyncio.Lock()

    @pipeline.app.page("/wall/")
    class Wall(web.View):
        """The operations wall's headline queries, as JSON (the same SQL Grafana runs)."""

        async def get(self, request: web.Request) -> web.Response:
            async with lock:  # one query set at a time, shared by every viewer for a second
                if time.monotonic() - cache.at > 1.0:
                    cache.data = await asyncio.to_thread(wall_summary, store)
                    cache.at = time.monotonic()
            return self.json(cache.data)

    @pipeline.app.page("/health/")
    class Health(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"ok": True, "app": pipeline.settings.app_id})
