"""HTTP views on the worker's Faust web server: the wall summary the live view shows (behind a bearer
token when the port is bound off loopback) and the liveness the Kubernetes probes ask."""
from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any, Protocol

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

    @property
    def liveness(self) -> Any: ...   # streams.agents.health.Liveness


class _Cache:
    """The latest wall summary and when it was read (monotonic seconds)."""

    def __init__(self) -> None:
        self.at = 0.0
        self.data: WallSummary | None = None


def authorised(request: web.Request, token: str | None) -> bool:
    """No token configured (loopback only): anyone on this machine. Else ``Authorization: Bearer <token>``."""
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return hmac.compare_digest(given.encode(), token.encode())


def register_views(pipeline: WorkerLike, store: QueryStore) -> None:
    cache = _Cache()
    lock = asyncio.Lock()
    secret = pipeline.settings.wall_token
    token = secret.get_secret_value() if secret is not None else None

    @pipeline.app.page("/wall/")
    class Wall(web.View):
        """The operations wall's headline queries, as JSON (the same SQL Grafana runs)."""

        async def get(self, request: web.Request) -> web.Response:
            if not authorised(request, token):
                return self.json({"error": "the wall needs Authorization: Bearer <CITYGRID_WALL_TOKEN>"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="citygrid wall"'})
            async with lock:  # one query set at a time, shared by every viewer for a second
                if time.monotonic() - cache.at > 1.0:
                    cache.data = await asyncio.to_thread(wall_summary, store)
                    cache.at = time.monotonic()
            return self.json(cache.data)

    @pipeline.app.page("/health/")
    class Health(web.View):
        """Liveness for the probes (streams.agents.health): 200 when every agent, service and consumer
        is alive and making progress, 503 with the problems otherwise. No case data, no token."""

        async def get(self, request: web.Request) -> web.Response:
            report = pipeline.liveness.report(dict(pipeline.app.agents))
            report["app"] = pipeline.settings.app_id
            return self.json(report, status=200 if report["ok"] else 503)
