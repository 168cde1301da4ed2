"""Every Prometheus metric of the pipeline, defined in one place.

An instance owns its registry, so tests (and a worker) create their own ``PipelineMetrics``
instead of patching module globals. Names are prefixed ``citygrid_``; the alert rules in
``deploy/prometheus/alerts.yml`` refer to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds from the pipeline first seeing a record to the case being dispatched.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
BATCH_ROW_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)
WRITE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WEBHOOK_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Ingest
        self.events_in = Counter("citygrid_events_in", "Raw records consumed, by source and topic",
                                 ["source", "topic"], registry=r)
        self.dead_letters = Counter("citygrid_dead_letters",
                                    "Records sent to a dead-letter topic, by topic and reason",
                                    ["topic", "reason"], registry=r)
        self.triage = Counter("citygrid_triage", "Records sent to manual triage 人工分拨, by reason", ["reason"],
                              registry=r)
        self.classification_confidence = Histogram(
            "citygrid_classification_confidence", "Classifier confidence of each signal, by source",
            ["source"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.iot_late_readings = Counter("citygrid_iot_late_readings",
                                         "IoT readings whose minute had closed (left out of device_minutes)",
                                         registry=r)
        self.state_restores = Counter("citygrid_state_restores",
                                      "Input partitions whose keyed state was set up from its changelog "
                                      "(start, restart, rebalance), by topic",
                                      ["topic"], registry=r)
        # Cases
        self.dedup_merges = Counter("citygrid_dedup_merges", "Signals merged into an existing case", registry=r)
        self.cases_opened = Counter("citygrid_cases_opened", "Cases opened 立案, by origin", ["origin"], registry=r)
        self.dispatches = Counter("citygrid_dispatches", "Dispatches 派遣, by response level", ["level"], registry=r)
        self.open_cases = Gauge("citygrid_open_cases", "Open cases by stage and light", ["stage", "light"], registry=r)
        self.sla_transitions = Counter("citygrid_sla_transitions", "SLA light changes to yellow or red, by stage",
                                       ["light", "stage"], registry=r)
        self.case_partitions = Gauge("citygrid_case_partitions",
                                     "case.inputs partitions whose case state this worker holds (lean path)",
                                     registry=r)
        self.state_restore_seconds = Gauge("citygrid_case_state_restore_seconds",
                                           "Time the last assigned partition took to be ready (changelog catch-up "
                                           "and index), lean path", registry=r)
        self.ingest_to_dispatch = Histogram(
            "citygrid_ingest_to_dispatch_seconds", "End-to-end latency from ingest to dispatch",
            buckets=LATENCY_BUCKETS, registry=r)
        # ClickHouse
        self.store_batch_rows = Histogram("citygrid_clickhouse_batch_rows", "Rows per ClickHouse INSERT, by table",
                                          ["table"], buckets=BATCH_ROW_BUCKETS, registry=r)
        self.store_write_seconds = Histogram("citygrid_clickhouse_write_seconds",
                                             "Latency of ClickHouse INSERTs, by table",
                                             ["table"], buckets=WRITE_SECONDS_BUCKETS, registry=r)
        self.store_write_failures = Counter("citygrid_clickhouse_write_failures",
                                            "Failed ClickHouse INSERTs (retried), by table",
                                            ["table"], registry=r)
        self.store_rows_written = Counter("citygrid_clickhouse_rows_written", "Rows written to ClickHouse, by table",
                                          ["table"], registry=r)
        self.store_buffered_rows = Gauge("citygrid_clickhouse_buffered_rows", "Rows waiting in the batch writer",
                                         registry=r)
        self.store_buffer_capacity = Gauge("citygrid_clickhouse_buffer_capacity_rows",
                                           "Rows the batch writer may hold (settings.store_buffer_rows)", registry=r)
        self.store_backpressure = Counter("citygrid_clickhouse_backpressure",
                                          "Adds refused because the buffer was full", registry=r)
        # Webhooks
        self.webhook_deliveries = Counter("citygrid_webhook_deliveries",
                                          "Webhook delivery attempts by department and outcome "
                                          "(delivered|retry|failed|dead)", ["department", "outcome"], registry=r)
        self.webhook_latency = Histogram("citygrid_webhook_latency_seconds", "Webhook request latency, by department",
                                         ["department"], buckets=WEBHOOK_SECONDS_BUCKETS, registry=r)
        # Kafka
        self.consumer_lag = Gauge("citygrid_consumer_lag", "Records behind the log end, by topic and partition",
                                  ["topic", "partition"], registry=r)
        self.last_event_seconds = Gauge("citygrid_last_event_timestamp_seconds",
                                        "Wall-clock time the last raw record was consumed", registry=r)

    # Small helpers for the call sites that update several series at once.
    def event_in(self, source: str, topic: str, now_s: float) -> None:
        self.events_in.labels(source=source, topic=topic).inc()
        self.last_event_seconds.set(now_s)

    def set_open_cases(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace the gauge with the current (stage, light) -> count (stale pairs drop to absent)."""
        self.open_cases.clear()
        for (stage, light), count in counts.items():
            self.open_cases.labels(stage=stage, light=light).set(count)

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), value in lag.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(value)


def start_metrics_server(port: int, metrics: PipelineMetrics, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve ``/metrics`` in a daemon thread; returns the HTTP server (call ``.shutdown()`` to stop)."""
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server
