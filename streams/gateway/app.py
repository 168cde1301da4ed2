"""Assembly and serving: one aiohttp application, the keys, the limits, the producer and the read model.

``build_gateway`` makes the parts from Settings; ``make_app`` wires the routes and middlewares (auth from
``X-Api-Key`` / ``Authorization: Bearer``, the per-caller request budget, errors as JSON); ``run_gateway``
serves until stopped (``streams gateway``); ``GatewayRunner`` starts it inside another event loop (the
worker, with ``CITYGRID_GATEWAY_IN_WORKER``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streams.bus.codec import SchemaRegistry, registry
from streams.bus.topics import TopicNames
from streams.core.knowledge.knowledge import Knowledge
from streams.core.knowledge.services import Service, catalogue
from streams.gateway import cases, feeds, open311, openapi, progress
from streams.gateway.cases import API_KEY, ApiError, json_response
from streams.gateway.keys import ApiKey, KeyRing
from streams.gateway.limits import RateLimited, RateLimits
from streams.gateway.producer import FeedProducer, ProduceError
from streams.gateway.readmodel import ReadModel
from streams.gateway.tracking import Pending
from streams.settings import Settings
from streams.storage import Store, StoreError

log = logging.getLogger(__name__)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "citygrid_gateway_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "citygrid_gateway_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.records = Counter(
            "citygrid_gateway_records_total",
            "feed records by outcome (accepted, rejected, failed)",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.actions = Counter(
            "citygrid_gateway_actions_total", "case actions queued", ["action", "actor_kind"], registry=self.registry
        )
        self.open311_requests = Counter(
            "citygrid_gateway_open311_requests_total", "Open311 requests filed", ["client"], registry=self.registry
        )
        self.limited = Counter("citygrid_gateway_rate_limited_total", "answers 429", ["budget"], registry=self.registry)


@dataclass
class Gateway:
    settings: Settings
    keys: KeyRing
    limits: RateLimits
    producer: FeedProducer
    model: ReadModel
    knowledge: Knowledge
    codec: SchemaRegistry = field(default_factory=registry)
    pending: Pending = field(default_factory=Pending)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    def __post_init__(self) -> None:
        from streams.security import pseudonymizer

        self.topics = TopicNames(self.settings.topic_prefix)
        self.pseudonyms = pseudonymizer(self.settings)   # Open311 reporters: the deployment's pseudonym key
        self.services: dict[str, Service] = {s.code: s for s in catalogue(self.knowledge)}

    @staticmethod
    def header_key(request: web.Request) -> str | None:
        value = request.headers.get("X-Api-Key")
        if value:
            return value.strip()
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def public_base(self, request: web.Request) -> str:
        return self.settings.gateway_public_url.rstrip("/") or f"{request.scheme}://{request.host}"

    async def charge_key(self, request: web.Request, key: ApiKey) -> None:
        """The request budget of a key authenticated after the middleware (Open311's form api_key)."""
        if request.get(API_KEY) is key:
            return  # already charged by the middleware
        verdict = await self.limits.request(f"key:{key.name}", key.rate_limit)
        if not verdict.allowed:
            self.metrics.limited.labels(budget="requests").inc()
            raise RateLimited(verdict.retry_after, f"requests of key {key.name}")

    async def send_many(self, records: list[tuple[str, bytes | None, bytes]]) -> list[Exception | None]:
        if not self.producer.started:
            return [ProduceError("the gateway's Kafka producer is not running")] * len(records)
        return await self.producer.send_many(records)

    async def produce_one(self, logical_topic: str, key: bytes | None, value: bytes) -> None:
        [error] = await self.send_many([(self.topics.name(logical_topic), key, value)])
        if error is not None:
            raise ApiError(503, f"Kafka did not take the record, retry: {error}", retry=True)


GATEWAY = web.AppKey("gateway", Gateway)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Who is calling (header key, or the client address), their request budget, JSON errors, metrics."""
    g = request.app[GATEWAY]
    route = _route_name(request)
    started = asyncio.get_running_loop().time()
    status = 500
    try:
        presented = g.header_key(request)
        key = g.keys.authenticate(presented)
        if presented and key is None and not request.path.startswith("/open311/"):
            raise ApiError(401, "unknown API key")
        request[API_KEY] = key
        who, limit = (f"key:{key.name}", key.rate_limit) if key else (f"addr:{request.remote}", None)
        verdict = await g.limits.request(who, limit)
        if not verdict.allowed:
            g.metrics.limited.labels(budget="requests").inc()
            raise RateLimited(verdict.retry_after, "requests")
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return json_response(
            {"error": {"status": exc.status, "reason": exc.reason, **exc.extra}},
            exc.status,
            headers={"Retry-After": "1"} if exc.status == 503 else None,
        )
    except RateLimited as exc:
        status = 429
        if request.path.startswith("/open311/"):
            return open311.render_error(
                open311._fmt_of(request), open311.Open311Error(429, str(exc)), {"Retry-After": str(exc.retry_after)}
            )
        g.metrics.limited.labels(budget="records" if "records" in str(exc) else "requests").inc()
        return json_response(
            {"error": {"status": 429, "reason": str(exc)}}, 429, headers={"Retry-After": str(exc.retry_after)}
        )
    except StoreError as exc:
        status = 503
        log.warning("gateway: read model unavailable: %s", str(exc).splitlines()[0])
        return json_response(
            {"error": {"status": 503, "reason": "the case store is not reachable, retry"}},
            503,
            headers={"Retry-After": "5"},
        )
    except web.HTTPException as exc:
        status = exc.status
        if exc.status >= 400 and not request.path.startswith("/progress/"):
            reason = (
                exc.reason
                if exc.status != 413
                else (f"request body larger than {g.settings.gateway_max_body_bytes} bytes")
            )
            return json_response({"error": {"status": exc.status, "reason": reason}}, exc.status)
        raise
    finally:
        g.metrics.requests.labels(route=route, status=str(status)).inc()
        g.metrics.latency.labels(route=route).observe(asyncio.get_running_loop().time() - started)


def make_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=gateway.settings.gateway_max_body_bytes)
    app[GATEWAY] = gateway

    async def health(request: web.Request) -> web.Response:
        return json_response({"ok": True, "kafka": gateway.producer.started, "keys": len(gateway.keys)})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(gateway.metrics.registry), content_type="text/plain")

    async def spec(request: web.Request) -> web.Response:
        return json_response(openapi.document(gateway, gateway.public_base(request)))

    app.add_routes([web.get("/health", health), web.get("/metrics", metrics), web.get("/openapi.json", spec)])
    app.add_routes(feeds.routes(GATEWAY))
    app.add_routes(cases.routes(GATEWAY))
    app.add_routes(open311.routes(GATEWAY))
    app.add_routes(progress.routes(GATEWAY))
    return app


def build_gateway(settings: Settings, store: Store, knowledge: Knowledge | None = None) -> Gateway:
    keys = KeyRing.load(settings.gateway_keys_file) if settings.gateway_keys_file else KeyRing.empty()
    return Gateway(
        settings=settings,
        keys=keys,
        limits=RateLimits(settings.gateway_rate_limit, settings.gateway_record_rate_limit),
        producer=FeedProducer(settings),
        model=ReadModel(store),
        knowledge=knowledge or Knowledge.load(settings.kb_path, settings.city_dir),
    )


class GatewayRunner:
    """Starts and stops the gateway's server and producer inside a running event loop."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> GatewayRunner:
        settings = self.gateway.settings
        await self.gateway.producer.start()
        self.runner = web.AppRunner(make_app(self.gateway), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, settings.gateway_host, settings.gateway_port, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port (0 picks a free one)
        self.port = sockets[0].getsockname()[1] if sockets else settings.gateway_port
        log.info("gateway listening on http://%s:%s", settings.gateway_host, self.port)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.gateway.producer.stop()


async def serve(settings: Settings, store: Store, ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM (the ``streams gateway`` command)."""
    runner = await GatewayRunner(build_gateway(settings, store)).start()
    print(
        f"gateway: http://{settings.gateway_host}:{runner.port}/ (keys: {len(runner.gateway.keys)}; "
        f"OpenAPI at /openapi.json)",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.stop()
