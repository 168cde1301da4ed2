"""Writes grafana/dashboards/*.json from the wall queries (streams/wall/queries.py) and the Prometheus metrics.

The panels' SQL is the text of ``streams.wall.queries.QUERIES``, so the tests that run those queries on
both engines test the dashboards. Run ``python grafana/build.py`` after changing a query; a test
fails when the committed JSON is stale.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.wall.queries import QUERIES, WallQuery  # noqa: E402

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "citygrid-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "citygrid-prometheus"}
# grafana-clickhouse-datasource's query format: 0 time series, 1 table.
FORMAT = {"timeseries": 0}

DASHBOARDS = {
    "wall": ("citygrid-wall", "城市运行一网统管 City operations wall", "now/d", "now"),
    "league": ("citygrid-league", "部门排行 Department league table", "now/d", "now"),
    "field": ("citygrid-field", "网格巡查与居民区工作站 Inspectors and stations", "now/d", "now"),
    "sensors": ("citygrid-sensors", "物联感知 Sensors", "now/d", "now"),
    "case": ("citygrid-case", "案件详情 Case", "now-7d", "now"),
}
# Panel order and sizes on each ClickHouse dashboard: (query name, width, height).
LAYOUT = {
    "wall": [("lights", 6, 4), ("urges", 6, 4), ("quick_vs_dispatched", 12, 4),
             ("cases_by_origin", 6, 8), ("cases_by_stage", 6, 8), ("signals_by_source", 6, 8), ("top_categories", 6, 8),
             ("open_cases_map", 12, 12), ("cases_by_hour", 12, 6), ("signals_by_interval", 12, 6),
             ("dispatches_by_department", 8, 8), ("dead_letters_by_topic", 8, 8), ("triage_by_reason", 8, 8)],
    "league": [("period_totals", 12, 5), ("cases_by_day", 12, 5), ("department_kpis", 24, 10), ("unit_kpis", 24, 10),
               ("department_league", 24, 10), ("overdue_cases", 24, 12),
               ("webhook_outcomes", 24, 8)],
    "field": [("field_kpis", 12, 10), ("station_compliance", 12, 10), ("field_reporters", 12, 10),
              ("field_verifications", 12, 10), ("inspector_league", 24, 10), ("zero_report_alerts", 12, 8),
              ("zero_reports", 12, 8), ("patrol_coverage", 12, 8)],
    "sensors": [("heritage_alarms", 12, 8), ("ebike_detections", 12, 8), ("alarm_episodes", 24, 8),
                ("building_worst_minutes", 24, 8), ("device_trend", 24, 8), ("sensor_alarms_by_hour", 24, 8)],
    "case": [("case_detail", 24, 6), ("case_history", 24, 10)],
}
# Template variables the panels' SQL names (``${case_id}``, ``${device_id}``), by dashboard.
TEMPLATING = {
    "case": [{"name": "case_id", "label": "案件编号 case id", "type": "textbox", "query": "",
              "current": {"text": "", "value": ""}}],
    "sensors": [{"name": "device_id", "label": "设备编号 device id", "type": "textbox", "query": "HB-WK-V01",
                 "current": {"text": "HB-WK-V01", "value": "HB-WK-V01"}}],
}
# Pipeline health: (title, panel type, [(PromQL, legend)], unit).
HEALTH = [
    ("Events in / s by source", "timeseries", [("sum by (source) (rate(citygrid_events_in_total[1m]))", "{{source}}")], "ops"),
    ("Dead letters / s by topic", "timeseries", [("sum by (topic, reason) (rate(citygrid_dead_letters_total[5m]))",
                                                  "{{topic}} {{reason}}")], "ops"),
    ("Consumer lag", "timeseries", [("sum by (topic) (citygrid_consumer_lag)", "{{topic}}")], "short"),
    ("Ingest → dispatch latency", "timeseries", [
        ("histogram_quantile(0.5, sum by (le) (rate(citygrid_ingest_to_dispatch_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(citygrid_ingest_to_dispatch_seconds_bucket[5m])))", "p99")], "s"),
    ("Open cases by stage and light", "timeseries", [("sum by (stage, light) (citygrid_open_cases)", "{{stage}} {{light}}")],
     "short"),
    ("SLA transitions / min", "timeseries", [("sum by (light) (increase(citygrid_sla_transitions_total[1m]))", "{{light}}")],
     "short"),
    ("Classification confidence p50", "timeseries", [
        ("histogram_quantile(0.5, sum by (le, source) (rate(citygrid_classification_confidence_bucket[5m])))", "{{source}}")],
     "percentunit"),
    ("Dedup merges / s", "timeseries", [("rate(citygrid_dedup_merges_total[5m])", "merges")], "ops"),
    ("ClickHouse rows written / s", "timeseries", [("sum by (table) (rate(citygrid_clickhouse_rows_written_total[1m]))",
                                                    "{{table}}")], "rows"),
    ("ClickHouse write failures / s", "timeseries", [("sum by (table) (rate(citygrid_clickhouse_write_failures_total[5m]))",
                                                      "{{table}}")], "ops"),
    ("ClickHouse INSERT p99", "timeseries", [
        ("histogram_quantile(0.99, sum by (le, table) (rate(citygrid_clickhouse_write_seconds_bucket[5m])))", "{{table}}")],
     "s"),
    ("Batch writer buffer", "timeseries", [("citygrid_clickhouse_buffered_rows", "buffered rows")], "short"),
    ("Webhook outcomes / s", "timeseries", [("sum by (outcome) (rate(citygrid_webhook_deliveries_total[5m]))",
                                             "{{outcome}}")], "ops"),
    ("Webhook latency p95", "timeseries", [
        ("histogram_quantile(0.95, sum by (le, department) (rate(citygrid_webhook_latency_seconds_bucket[5m])))",
         "{{department}}")], "s"),
]


def clickhouse_panel(panel_id: int, query: WallQuery, x: int, y: int, w: int, h: int) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": panel_id, "title": query.title, "type": query.panel, "datasource": CLICKHOUSE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{
            "refId": "A", "datasource": CLICKHOUSE, "editorType": "sql", "queryType": query.panel
            if query.panel == "timeseries" else "table", "format": FORMAT.get(query.panel, 1), "rawSql": query.sql,
        }],
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": column},
             "properties": [{"id": "links", "value": [{"title": "打开案件 Open case", "url": url}]}]}
            for column, url in query.links.items()]},
        "options": {},
        "description": f"streams.wall.queries.QUERIES[{query.name!r}]",
    }
    if query.panel == "geomap":
        panel["options"] = {
            "view": {"id": "coords", "lat": 31.19, "lon": 121.44, "zoom": 13},
            "layers": [{"type": "markers", "name": "open cases",
                        "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                        "config": {"showLegend": True, "style": {"color": {"field": "light", "fixed": "green"},
                                                                 "size": {"fixed": 6}}}}],
        }
    if query.panel == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "none"}
    return panel


def layout(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Left-to-right, top-to-bottom positions on Grafana's 24-column grid."""
    positions, x, y, row_height = [], 0, 0, 0
    for w, h in items:
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        positions.append((x, y))
        x, row_height = x + w, max(row_height, h)
    return positions


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], time_from: str, time_to: str,
              templating: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["citygrid"], "timezone": "Asia/Shanghai", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "30s", "time": {"from": time_from, "to": time_to},
        "templating": {"list": templating or []}, "panels": panels,
        "links": [{"title": "citygrid", "type": "dashboards", "tags": ["citygrid"], "asDropdown": True}],
    }


def build() -> dict[str, dict[str, Any]]:
    boards: dict[str, dict[str, Any]] = {}
    for key, (uid, title, time_from, time_to) in DASHBOARDS.items():
        items = LAYOUT[key]
        positions = layout([(w, h) for _, w, h in items])
        panels = [clickhouse_panel(i + 1, QUERIES[name], x, y, w, h)
                  for i, ((name, w, h), (x, y)) in enumerate(zip(items, positions))]
        templating = TEMPLATING.get(key)
        boards[uid] = dashboard(uid, title, panels, time_from, time_to, templating)
    positions = layout([(12, 8)] * len(HEALTH))
    health_panels = []
    for i, ((title, kind, exprs, unit), (x, y)) in enumerate(zip(HEALTH, positions)):
        health_panels.append({
            "id": i + 1, "title": title, "type": kind, "datasource": PROMETHEUS,
            "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
            "targets": [{"refId": chr(ord("A") + j), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(exprs)],
        })
    boards["citygrid-pipeline"] = dashboard("citygrid-pipeline", "流水线健康 Pipeline health", health_panels,
                                            "now-1h", "now")
    return boards


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    DASHBOARD_DIR.mkdir(exist_ok=True)
    for uid, board in build().items():
        (DASHBOARD_DIR / f"{uid}.json").write_text(render(board), encoding="utf-8")
        print(f"wrote {DASHBOARD_DIR / f'{uid}.json'}")


if __name__ == "__main__":
    main()
