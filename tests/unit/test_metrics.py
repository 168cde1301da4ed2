"""streams.metrics: the worker's Prometheus metrics."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streams.metrics import PipelineMetrics


def test_metrics_are_prefixed_and_isolated_per_instance() -> None:
    first, second = PipelineMetrics(), PipelineMetrics(CollectorRegistry())
    first.event_in("hotline", "hotline.calls", 1_700_000_000.0)
    first.set_open_cases({("dispatch", "red"): 3})
    first.set_open_cases({("handle", "green"): 1})
    text = generate_latest(first.registry).decode()
    assert 'citygrid_events_in_total{source="hotline",topic="hotline.calls"} 1.0' in text
    assert 'citygrid_open_cases{light="green",stage="handle"} 1.0' in text
    assert 'stage="dispatch"' not in text  # replaced, not accumulated
    assert "citygrid_events_in_total{" not in generate_latest(second.registry).decode()
    names = {m.name for m in first.registry.collect()}
    assert names and all(n.startswith("citygrid_") for n in names)
    for required in ("citygrid_events_in", "citygrid_dead_letters", "citygrid_classification_confidence",
                     "citygrid_dedup_merges", "citygrid_open_cases", "citygrid_sla_transitions",
                     "citygrid_ingest_to_dispatch_seconds", "citygrid_clickhouse_batch_rows",
                     "citygrid_clickhouse_write_seconds", "citygrid_clickhouse_write_failures",
                     "citygrid_webhook_deliveries", "citygrid_webhook_latency_seconds", "citygrid_consumer_lag"):
        assert required in names
