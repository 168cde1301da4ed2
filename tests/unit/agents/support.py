"""Shared builders for the adapter tests: a fixed clock, fresh metrics, sample raw records."""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from streams.bus.topics import TopicNames
from streams.metrics import PipelineMetrics

PREFIX = "t1"
NAMES = TopicNames(PREFIX)
NOW_S = 1_795_150_000.0  # 2026-11-20 11:26:40 +08:00, a Friday
NOW_MS = int(NOW_S * 1000)


def clock() -> float:
    return NOW_S


def fresh_metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry())


def sample(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    """A metric sample's value, 0 when the series does not exist yet."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def call(call_id: str = "C-QZ-1", text: str = "钦江路15号有6户居室群租，人员很杂，影响居民生活",
         address: str | None = "钦江路15号", **kw: Any) -> dict[str, Any]:
    return {"call_id": call_id, "line": "12345", "received_at": "2026-11-20T09:30:00+08:00",
            "caller": "13800000000", "text": text, "address": address, **kw}


def reading(device: str, metric: str, value: float, ts: str = "2026-11-20T10:00:00+08:00") -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "metric": metric, "value": value}


def track(inspector: str = "insp-007", ts: str = "2026-11-20T10:00:05+08:00") -> dict[str, Any]:
    return {"inspector_id": inspector, "ts": ts, "lat": 31.1975, "lon": 121.4585}
