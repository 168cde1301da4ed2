"""Alert rules with Debian's promtool, and Debian's real prometheus scraping PipelineMetrics."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.local.kafka import free_port
from streams.metrics import PipelineMetrics, start_metrics_server

pytestmark = pytest.mark.prometheus
REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
PIPELINE_DASHBOARD = REPO / "grafana" / "dashboards" / "citygrid-pipeline.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=PROM_DIR)


def test_promtool_check_rules() -> None:
    result = run("promtool", "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_check_example_config() -> None:
    result = run("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = run("promtool", "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text("utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text("utf-8"))
    firing = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    assert alerts == firing


def test_alerts_refer_only_to_metrics_pipeline_metrics_defines() -> None:
    import re

    defined = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    for metric in PipelineMetrics().registry.collect():
        defined.update(metric.name + suffix for suffix in suffixes[metric.type])
    text = (PROM_DIR / "alerts.yml").read_text("utf-8")
    used = set(re.findall(r"\bcitygrid_[a-z_]+", text))
    assert used and used <= defined, used - defined


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, PipelineMetrics]]:
    """Real prometheus scraping a PipelineMetrics endpoint served in this process."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    metrics = PipelineMetrics(CollectorRegistry())
    metrics_port = free_port()
    server = start_metrics_server(metrics_port, metrics, addr="127.0.0.1")
    shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "citygrid-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2)
                break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not start:\n"
                                       + (tmp_path / "prometheus.log").read_text()) from exc
                time.sleep(0.2)
        yield base, metrics
    finally:
        process.terminate()
        process.wait(30)
        log.close()
        server.shutdown()


def wait_for_series(base: str, query: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
        if doc["status"] == "success" and doc["data"]["result"]:
            return doc["data"]["result"]
        time.sleep(0.5)
    raise AssertionError(f"prometheus never returned {query}")


def test_real_prometheus_scrapes_the_citygrid_series(prometheus: tuple[str, PipelineMetrics]) -> None:
    base, metrics = prometheus
    metrics.event_in("hotline", "hotline.calls", time.time())
    metrics.event_in("hotline", "hotline.calls", time.time())
    metrics.dead_letters.labels(topic="hotline.calls", reason="schema").inc()
    metrics.set_open_cases({("dispatch", "red"): 4})
    metrics.ingest_to_dispatch.observe(0.3)
    metrics.store_write_failures.labels(table="signals").inc()
    metrics.webhook_deliveries.labels(department="城管中队", outcome="delivered").inc()
    metrics.set_consumer_lag({("hotline.calls", 0): 12})

    events = wait_for_series(base, 'citygrid_events_in_total{source="hotline",topic="hotline.calls"}')
    assert events[0]["value"][1] == "2"
    open_cases = wait_for_series(base, "citygrid_open_cases")
    assert open_cases[0]["metric"]["stage"] == "dispatch" and open_cases[0]["value"][1] == "4"
    assert wait_for_series(base, 'citygrid_webhook_deliveries_total{department="城管中队"}')
    assert wait_for_series(base, "citygrid_ingest_to_dispatch_seconds_count")[0]["value"][1] == "1"
    names = http_json(f"{base}/api/v1/label/__name__/values")["data"]
    assert {"citygrid_dead_letters_total", "citygrid_consumer_lag", "citygrid_clickhouse_write_failures_total",
            "citygrid_clickhouse_buffer_capacity_rows"} <= set(names)
    targets = http_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    groups = http_json(f"{base}/api/v1/rules")["data"]["groups"]
    assert len([r for g in groups for r in g["rules"]]) == 7


def test_pipeline_dashboard_promql_runs_on_real_prometheus(prometheus: tuple[str, PipelineMetrics]) -> None:
    base, _ = prometheus
    board = json.loads(PIPELINE_DASHBOARD.read_text("utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        doc = http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert doc["status"] == "success", (expr, doc)
