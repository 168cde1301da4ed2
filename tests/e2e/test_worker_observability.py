"""The running worker, observed the way operators do: Debian's real Prometheus scrapes it, and a
department's HTTP endpoint receives signed webhooks for its dispatches, recorded in ClickHouse."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.local.kafka import LocalKafka, free_port
from tests.e2e.helpers import WebhookReceiver, produce, query, wait_rows, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.prometheus]
PROM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SECRET = "e2e-webhook-secret-0123456789"


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen] = []

    def start(target_port: int) -> str:
        if shutil.which("prometheus") is None:
            pytest.fail("prometheus is not installed (make test installs it with apt-get)")
        shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
                  "scrape_configs": [{"job_name": "citygrid-worker",
                                      "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        processes.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT, cwd=tmp_path))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def prom_query(base: str, promql: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}),
                                    timeout=10) as resp:
            doc = json.loads(resp.read())
    except OSError:
        return []
    return doc["data"]["result"] if doc.get("status") == "success" else []


def value(base: str, promql: str) -> float:
    result = prom_query(base, promql)
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_scrapes_the_worker_and_departments_get_signed_webhooks(
        kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory, prometheus_for,
        tmp_path: Path) -> None:
    store_url = store_url_factory("server")
    with WebhookReceiver(SECRET) as receiver:
        hooks = tmp_path / "webhooks.yaml"
        hooks.write_text(yaml.safe_dump({
            "links_base_url": "https://grid.example.test",
            "endpoints": {"城管执法中队": {"url": receiver.url(), "secret": SECRET,
                                     "kinds": ["dispatch"]}},
        }, allow_unicode=True), encoding="utf-8")
        # three days ago: inside the event-time window whatever day the suite runs
        received = (datetime.now(UTC) - timedelta(days=3)).isoformat(timespec="seconds")
        places = ["钦江路101号", "斜土路1221号", "宜山路455号", "漕溪北路88号", "淮海中路1850号"]  # far apart
        calls = [{"call_id": f"OBS-{i}", "line": "12345", "received_at": received,
                  "caller": "13800000000", "text": f"{place}楼下饭店油烟直排，呛得人受不了", "address": place}
                 for i, place in enumerate(places)]
        calls.append({"call_id": "OBS-BAD", "line": "999", "received_at": received,
                      "caller": "1", "text": "x"})  # wrong line: dead letter
        produce(kafka.bootstrap, topic_prefix, [("hotline.calls", c) for c in calls])
        worker = worker_factory(store_url, webhooks_file=str(hooks))
        base = prometheus_for(worker.metrics_port)

        wait_rows(worker, signals=5, dispatches=5, webhook_deliveries=5)
        wait_until(lambda: len({h["key"] for h in receiver.hits}) >= 5, 60, "5 webhooks", worker.tail)

        # the department got one signed dispatch per case, with no caller phone number in it
        assert receiver.bad_signatures == 0
        bodies = [h["body"] for h in receiver.hits]
        assert {b["kind"] for b in bodies} == {"dispatch"}
        assert len({b["case"]["case_id"] for b in bodies}) == 5
        assert "13800000000" not in json.dumps(bodies, ensure_ascii=False)

        # Prometheus scraped the worker's series
        wait_until(lambda: value(base, 'sum(citygrid_events_in_total{topic="hotline.calls"})') >= 6, 60,
                   "events_in scraped")
        assert value(base, 'sum(citygrid_dead_letters_total{topic="hotline.calls"})') == 1
        assert value(base, "sum(citygrid_dispatches_total)") >= 5
        wait_until(lambda: value(base, "sum(citygrid_open_cases)") >= 5, 30, "open cases gauge", worker.tail)
        assert value(base, "sum(citygrid_clickhouse_rows_written_total)") > 0
        assert value(base, "sum(citygrid_ingest_to_dispatch_seconds_count)") >= 5
        assert value(base, 'sum(citygrid_webhook_deliveries_total{outcome="delivered"})') >= 5
        wait_until(lambda: bool(prom_query(base, "citygrid_consumer_lag")), 60, "consumer lag scraped")
        targets = json.loads(urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10).read())
        assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]

        assert worker.stop() == 0, worker.tail()
    outcomes = query(store_url, "SELECT department, status, http_status FROM webhook_deliveries FINAL")
    delivered = [r for r in outcomes if r["status"] == "delivered"]
    assert len(delivered) >= 5 and {r["department"] for r in delivered} == {"城管执法中队"}
    assert {r["http_status"] for r in delivered} == {204}
