"""The operations wall 一屏观天下: named SQL shared by the Grafana panels and the terminal live view.

Every query is written with the grafana-clickhouse-datasource macros (``$__timeFilter(col)``,
``$__fromTime``, ``$__toTime``, ``$__interval_s``) and Grafana template variables, always with
Grafana's ``percentencode`` format (``'${case_id:percentencode}'``): whatever is typed into the
variable reaches SQL as ``[A-Za-z0-9_.~%-]`` only, so no panel pastes free text into SQL (case ids
are made of those characters and pass unchanged);
:func:`expand` expands them exactly as the plugin does (pkg/macros/macros.go), so the live view
and the tests run the very text of the dashboards. Only SQL that clickhouse-server 18.16 runs:
no ``$__timeInterval`` (it expands to toStartOfInterval, absent in 18.16), no ``*_ms`` macros
(DateTime64). Tables are read with FINAL, which keeps the latest version of a case and collapses
rows a retried batch wrote twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from streams.core.times import CITY_TZ

# Case origin (source kind of the first report) -> the wall's five feeds.
ORIGIN_LABEL_SQL = (
    "multiIf(origin IN ('12345', '12319'), '12345热线', origin = 'inspector', '街道网格中心', "
    "origin IN ('station', 'committee'), '居民区工作站', origin = 'sensor', '传感器', "
    "origin = 'camera', '摄像头', origin = 'registry', '登记变更', '其他')"
)
STAGE_ORDER = ("register", "dispatch", "handle", "verify", "closed", "suspended", "void")
STAGE_LABELS = ("立案", "派遣", "处置", "核查", "结案", "挂起", "作废")
OPEN = "status NOT IN ('closed', 'void')"
FIELD_KINDS = "('inspector', 'station', 'committee')"
# 综合 score of a department, 0..100: the sample city's weights of its four rates (an officer's choice,
# not a national figure; rework and extension count as their complement) and the A–E grade bands.
KPI_WEIGHTS = (("close_rate", 0.30), ("on_time_rate", 0.40), ("rework_rate", 0.15), ("extension_rate", 0.15))
_LOWER_IS_BETTER = ("rework_rate", "extension_rate")
KPI_SCORE_SQL = "100 * (" + " + ".join(
    f"{weight:.2f} * " + (f"(1 - {rate})" if rate in _LOWER_IS_BETTER else rate) for rate, weight in KPI_WEIGHTS) + ")"
GRADE_BANDS = (("A", 90), ("B", 80), ("C", 70), ("D", 60))   # below the last: E
KPI_GRADE_SQL = "multiIf(" + ", ".join(f"score >= {floor}, '{g}'" for g, floor in GRADE_BANDS) + ", 'E')"


def grade_of(score: float) -> str:
    """The A–E grade of a 综合 score (what KPI_GRADE_SQL computes in ClickHouse)."""
    return next((g for g, floor in GRADE_BANDS if score >= floor), "E")
# (kind, instance) per department of a case; rows from before the instances (migration 0003) pair each
# kind with itself.
UNIT_PAIRS_SQL = ("arrayMap((d, u) -> tuple(d, u), departments, "
                  "if(length(units) = length(departments), units, departments))")
# Working days (Monday to Friday; public holidays are not subtracted) from $__fromTime to $__toTime,
# both days included, in the city's time zone.
WORKING_DAYS_SQL = ("length(arrayFilter(d -> toDayOfWeek(d) <= 5, "
                    "arrayMap(i -> toDate($__fromTime, 'Asia/Shanghai') + i, "
                    "range(toUInt32(toRelativeDayNum($__toTime, 'Asia/Shanghai') - "
                    "toRelativeDayNum($__fromTime, 'Asia/Shanghai') + 1)))))")


@dataclass(frozen=True)
class WallQuery:
    name: str
    title: str
    sql: str
    columns: tuple[str, ...]            # the result columns, in order (checked by the tests)
    panel: str = "table"                # Grafana panel type
    dashboard: str = "wall"             # wall | league | field | sensors | case
    live: bool = False                  # shown by the terminal live view
    links: dict[str, str] = field(default_factory=dict)  # column -> URL (Grafana data link)


CASE_LINK = "/d/citygrid-case/case?var-case_id=${__value.raw}"

_QUERIES = [
    # ----- (a) city operations wall
    WallQuery("signals_by_source", "今日上报 Events in by source",
              "SELECT source_kind, count() AS signals FROM signals FINAL WHERE $__timeFilter(ts) "
              "GROUP BY source_kind ORDER BY signals DESC, source_kind",
              ("source_kind", "signals"), "barchart", live=True),
    WallQuery("cases_by_origin", "今日案件来源 Cases by source",
              f"SELECT {ORIGIN_LABEL_SQL} AS source, count() AS cases FROM cases FINAL "
              "WHERE $__timeFilter(opened) GROUP BY source ORDER BY cases DESC, source",
              ("source", "cases"), "piechart", live=True),
    WallQuery("cases_by_stage", "案件环节 Cases by stage",
              f"SELECT status AS stage, transform(status, {list(STAGE_ORDER)!r}, {list(STAGE_LABELS)!r}, status) "
              "AS stage_zh, count() AS cases FROM cases FINAL WHERE $__timeFilter(opened) "
              f"GROUP BY stage, stage_zh ORDER BY indexOf({list(STAGE_ORDER)!r}, stage), stage",
              ("stage", "stage_zh", "cases"), "barchart", live=True),
    WallQuery("lights", "红黄灯 Open cases by light",
              "SELECT countIf(light = 'green') AS green, countIf(light = 'yellow') AS yellow, "
              f"countIf(light = 'red') AS red FROM cases FINAL WHERE {OPEN}",
              ("green", "yellow", "red"), "stat", live=True),
    WallQuery("urges", "催办 Urges",
              "SELECT countIf(kind = 'urge') AS urges, countIf(kind = 'sla_yellow') AS yellow_alerts, "
              "countIf(kind = 'sla_red') AS red_alerts, countIf(kind = 'escalate') AS escalations "
              "FROM sla_alerts FINAL WHERE $__timeFilter(ts)",
              ("urges", "yellow_alerts", "red_alerts", "escalations"), "stat", live=True),
    WallQuery("quick_vs_dispatched", "街道快处 vs 区派遣 Street quick-handled vs district-dispatched",
              "SELECT countIf(quick_handled = 1) AS street_quick_handled, "
              "countIf(dispatched_by = 'street' AND quick_handled = 0) AS street_dispatched, "
              "countIf(dispatched_by = 'district') AS district_dispatched, "
              "countIf(dispatched_by = 'station') AS station_handled "
              "FROM cases FINAL WHERE $__timeFilter(opened)",
              ("street_quick_handled", "street_dispatched", "district_dispatched", "station_handled"), "stat",
              live=True),
    WallQuery("top_categories", "高发类别 Top categories",
              "SELECT category_code, category_name, count() AS cases FROM cases FINAL WHERE $__timeFilter(opened) "
              "GROUP BY category_code, category_name ORDER BY cases DESC, category_code LIMIT 10",
              ("category_code", "category_name", "cases"), "barchart", live=True),
    WallQuery("cases_by_hour", "分时趋势 Cases by hour",
              "SELECT toStartOfHour(opened) AS time, count() AS cases FROM cases FINAL WHERE $__timeFilter(opened) "
              "GROUP BY time ORDER BY time",
              ("time", "cases"), "timeseries"),
    WallQuery("signals_by_interval", "上报趋势 Events by source over time",
              "SELECT toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s, 'Asia/Shanghai') AS time, "
              "source_kind, count() AS signals FROM signals FINAL WHERE $__timeFilter(ts) "
              "GROUP BY time, source_kind ORDER BY time, source_kind",
              ("time", "source_kind", "signals"), "timeseries"),
    WallQuery("open_cases_map", "在办案件地图 Open cases",
              "SELECT case_id, category_name, status, light, street, address, lat, lon FROM cases FINAL "
              f"WHERE {OPEN} AND lat IS NOT NULL AND lon IS NOT NULL ORDER BY case_id LIMIT 5000",
              ("case_id", "category_name", "status", "light", "street", "address", "lat", "lon"), "geomap",
              links={"case_id": CASE_LINK}),
    WallQuery("dead_letters_by_topic", "死信 Dead letters by topic",
              "SELECT topic, reason, count() AS dead_letters FROM dead_letters FINAL WHERE $__timeFilter(ts) "
              "GROUP BY topic, reason ORDER BY dead_letters DESC, topic, reason",
              ("topic", "reason", "dead_letters"), "table", live=True),
    WallQuery("triage_by_reason", "人工分拨 Manual triage",
              "SELECT topic, reason, count() AS records FROM triage FINAL WHERE $__timeFilter(ts) "
              "GROUP BY topic, reason ORDER BY records DESC, topic, reason",
              ("topic", "reason", "records"), "table"),
    WallQuery("dispatches_by_department", "派遣部门 Dispatches by department",
              "SELECT primary_department AS department, count() AS dispatches FROM dispatches FINAL "
              "WHERE $__timeFilter(ts) GROUP BY department ORDER BY dispatches DESC, department LIMIT 20",
              ("department", "dispatches"), "barchart", live=True),
    # ----- (b) department league table 部门排行
    WallQuery("department_league", "部门排行 Department league table",
              "SELECT departments[1] AS department, count() AS cases, countIf(status = 'closed') AS closed, "
              "round(if(count() = 0, 0, countIf(status = 'closed') / count()), 3) AS close_rate, "
              "round(if(countIf(status = 'closed') = 0, 0, countIf(status = 'closed' AND on_time = 1) / "
              "countIf(status = 'closed')), 3) AS on_time_rate, "
              "round(if(count() = 0, 0, countIf(rework_count > 0) / count()), 3) AS rework_rate, "
              "round(if(countIf(status = 'closed') = 0, 0, sumIf(handling_ms, status = 'closed') / "
              "countIf(status = 'closed') / 3600000), 2) AS avg_handling_hours "
              "FROM cases FINAL WHERE $__timeFilter(opened) AND notEmpty(departments) AND status != 'void' "
              "GROUP BY department ORDER BY close_rate DESC, on_time_rate DESC, department",
              ("department", "cases", "closed", "close_rate", "on_time_rate", "rework_rate", "avg_handling_hours"),
              "table", dashboard="league", live=True),
    WallQuery("overdue_cases", "超期案件 Overdue cases",
              "SELECT case_id, category_name, departments[1] AS department, status, light, street, address, "
              "toDateTime(intDiv(deadline_ms, 1000), 'Asia/Shanghai') AS deadline, "
              "round((toUInt32($__toTime) * 1000 - deadline_ms) / 3600000, 1) AS overdue_hours "
              f"FROM cases FINAL WHERE {OPEN} AND deadline_ms > 0 AND deadline_ms < toUInt32($__toTime) * 1000 "
              "ORDER BY overdue_hours DESC, case_id LIMIT 200",
              ("case_id", "category_name", "department", "status", "light", "street", "address", "deadline",
               "overdue_hours"), "table", dashboard="league", live=True, links={"case_id": CASE_LINK}),
    WallQuery("webhook_outcomes", "部门推送 Webhook deliveries by department",
              "SELECT department, countIf(status = 'delivered') AS delivered, countIf(status = 'retry') AS retries, "
              "countIf(status = 'failed') AS failed, countIf(status = 'dead') AS dead_lettered, "
              "if(countIf(status = 'delivered') = 0, 0, round(avgIf(latency_ms, status = 'delivered'), 1)) "
              "AS avg_latency_ms "
              "FROM webhook_deliveries FINAL WHERE $__timeFilter(ts) GROUP BY department "
              "ORDER BY dead_lettered DESC, failed DESC, department",
              ("department", "delivered", "retries", "failed", "dead_lettered", "avg_latency_ms"), "table",
              dashboard="league"),
    # ----- (c) inspectors and stations 网格巡查员 / 居民区工作站
    # A case lists its reports as "<source kind>:<source id>" (the engine's ``sources``).
    WallQuery("field_reporters", "上报情况 Reports by inspector and station",
              "SELECT reporter_kind, reporter_id, count() AS reports, sum(handled_on_spot) AS handled_on_spot, "
              "sum(valid) AS valid_reports, round(if(count() = 0, 0, sum(valid) / count()), 3) AS valid_rate "
              "FROM (SELECT reporter_kind, reporter_id, concat(source_kind, ':', source_id) AS source_key, "
              "handled_on_spot FROM signals FINAL "
              f"WHERE reporter_kind IN {FIELD_KINDS} AND $__timeFilter(ts)) AS field_reports "
              "ANY LEFT JOIN (SELECT arrayJoin(sources) AS source_key, toUInt8(1) AS valid FROM cases FINAL "
              "WHERE status != 'void') AS valid_sources USING source_key "
              "GROUP BY reporter_kind, reporter_id ORDER BY reports DESC, reporter_kind, reporter_id",
              ("reporter_kind", "reporter_id", "reports", "handled_on_spot", "valid_reports", "valid_rate"),
              "table", dashboard="field"),
    WallQuery("field_verifications", "核查及时 Verification on time",
              "SELECT actor_kind, actor_id, count() AS verifications, countIf(light != 'red') AS on_time, "
              "round(if(count() = 0, 0, countIf(light != 'red') / count()), 3) AS on_time_rate "
              "FROM case_transitions FINAL WHERE action IN ('verify_pass', 'verify_fail') AND $__timeFilter(ts) "
              "GROUP BY actor_kind, actor_id ORDER BY verifications DESC, actor_kind, actor_id",
              ("actor_kind", "actor_id", "verifications", "on_time", "on_time_rate"), "table", dashboard="field"),
    WallQuery("zero_reports", "零报告 Zero reports",
              "SELECT reporter_kind, reporter_id, street, count() AS zero_reports FROM zero_reports FINAL "
              "WHERE $__timeFilter(ts) GROUP BY reporter_kind, reporter_id, street "
              "ORDER BY zero_reports DESC, reporter_kind, reporter_id",
              ("reporter_kind", "reporter_id", "street", "zero_reports"), "table", dashboard="field"),
    # 巡查排行: the inspectors' workload over the period, reports made beside it
    WallQuery("inspector_league", "巡查员排行 Inspector league (patrol workload)",
              "SELECT inspector_id, grid, street, days, distance_km, moving_hours, idle_hours, idle_periods, coverage, "
              "reports FROM (SELECT inspector_id, any(grid_id) AS grid, any(street) AS street, count() AS days, "
              "round(sum(distance_m) / 1000, 2) AS distance_km, round(sum(moving_s) / 3600, 2) AS moving_hours, "
              "round(sum(idle_s) / 3600, 2) AS idle_hours, sum(idle_periods) AS idle_periods, "
              "round(avg(if(cells_assigned = 0, 0, cells_assigned_covered / cells_assigned)), 3) AS coverage "
              "FROM patrol_days FINAL WHERE $__timeFilter(day) GROUP BY inspector_id) AS patrol "
              "ANY LEFT JOIN (SELECT reporter_id AS inspector_id, count() AS reports FROM ("
              "SELECT reporter_id FROM signals FINAL WHERE reporter_kind = 'inspector' AND $__timeFilter(ts) "
              "UNION ALL SELECT reporter_id FROM zero_reports FINAL WHERE reporter_kind = 'inspector' "
              "AND $__timeFilter(ts)) AS made GROUP BY inspector_id) AS made_reports USING inspector_id "
              "ORDER BY distance_km DESC, inspector_id",
              ("inspector_id", "grid", "street", "days", "distance_km", "moving_hours", "idle_hours", "idle_periods",
               "coverage", "reports"), "table", dashboard="field"),
    # 零报告缺报: stations with neither an item nor 无事报平安 by the deadline (sla.alerts, kind zero_report_missing)
    WallQuery("zero_report_alerts", "零报告缺报 Stations that missed their daily report",
              "SELECT substring(case_id, 4, length(case_id) - 12) AS station, ts AS deadline, "
              "departments[1] AS notified FROM sla_alerts FINAL "
              "WHERE kind = 'zero_report_missing' AND $__timeFilter(ts) ORDER BY deadline DESC, station",
              ("station", "deadline", "notified"), "table", dashboard="field", live=True),
    WallQuery("patrol_coverage", "巡查覆盖 Patrol coverage",
              "SELECT inspector_id, street, count() AS fixes, uniqExact(cell) AS cells, "
              "min(ts) AS first_fix, max(ts) AS last_fix FROM inspector_tracks FINAL WHERE $__timeFilter(ts) "
              "GROUP BY inspector_id, street ORDER BY cells DESC, inspector_id",
              ("inspector_id", "street", "fixes", "cells", "first_fix", "last_fix"), "table", dashboard="field"),
    # ----- (e) assessment 考核: the KPIs as the standards define them (streams report prints them monthly)
    WallQuery("department_kpis", "部门考核 Department KPIs and grade",
              f"SELECT department, count() AS cases, sum(is_closed) AS closed, "
              "round(if(count() = 0, 0, sum(is_closed) / count()), 3) AS close_rate, "
              "round(if(sum(is_closed) = 0, 0, sum(is_closed * (1 - is_late)) / sum(is_closed)), 3) AS on_time_rate, "
              "round(if(count() = 0, 0, sum(is_reworked) / count()), 3) AS rework_rate, "
              "round(if(count() = 0, 0, sum(is_extended) / count()), 3) AS extension_rate, "
              "round(if(sum(is_closed) = 0, 0, sum(is_closed * handling_ms) / sum(is_closed) / 3600000), 2) "
              "AS avg_handling_hours, "
              f"round({KPI_SCORE_SQL}, 1) AS score, {KPI_GRADE_SQL} AS grade "
              "FROM (SELECT case_id, arrayJoin(departments) AS department, toUInt8(status = 'closed') AS is_closed, "
              "toUInt8(rework_count > 0) AS is_reworked, handling_ms FROM cases FINAL "
              "WHERE $__timeFilter(opened) AND notEmpty(departments) AND status != 'void') AS department_cases "
              "ANY LEFT JOIN (SELECT case_id, max(toUInt8(from_stage = 'handle' AND light = 'red')) AS is_late, "
              "max(toUInt8(action = 'extend')) AS is_extended FROM case_transitions FINAL GROUP BY case_id) "
              "AS stage_facts "
              "USING case_id GROUP BY department ORDER BY score DESC, department",
              ("department", "cases", "closed", "close_rate", "on_time_rate", "rework_rate", "extension_rate",
               "avg_handling_hours", "score", "grade"), "table", dashboard="league"),
    WallQuery("unit_kpis", "街道部门考核 KPIs per street instance (e.g. 徐家汇街道城管中队)",
              f"SELECT department, unit, count() AS cases, sum(is_closed) AS closed, "
              "round(if(count() = 0, 0, sum(is_closed) / count()), 3) AS close_rate, "
              "round(if(sum(is_closed) = 0, 0, sum(is_closed * (1 - is_late)) / sum(is_closed)), 3) AS on_time_rate, "
              "round(if(count() = 0, 0, sum(is_reworked) / count()), 3) AS rework_rate, "
              "round(if(count() = 0, 0, sum(is_extended) / count()), 3) AS extension_rate, "
              "round(if(sum(is_closed) = 0, 0, sum(is_closed * handling_ms) / sum(is_closed) / 3600000), 2) "
              "AS avg_handling_hours, "
              f"round({KPI_SCORE_SQL}, 1) AS score, {KPI_GRADE_SQL} AS grade "
              "FROM (SELECT case_id, tupleElement(pair, 1) AS department, tupleElement(pair, 2) AS unit, "
              "toUInt8(status = 'closed') AS is_closed, toUInt8(rework_count > 0) AS is_reworked, handling_ms "
              f"FROM cases FINAL ARRAY JOIN {UNIT_PAIRS_SQL} AS pair "
              "WHERE $__timeFilter(opened) AND notEmpty(departments) AND status != 'void') AS unit_cases "
              "ANY LEFT JOIN (SELECT case_id, max(toUInt8(from_stage = 'handle' AND light = 'red')) AS is_late, "
              "max(toUInt8(action = 'extend')) AS is_extended FROM case_transitions FINAL GROUP BY case_id) "
              "AS stage_facts "
              "USING case_id GROUP BY department, unit ORDER BY department, score DESC, unit",
              ("department", "unit", "cases", "closed", "close_rate", "on_time_rate", "rework_rate", "extension_rate",
               "avg_handling_hours", "score", "grade"), "table", dashboard="league"),
    WallQuery("period_totals", "本期概况 Cases of the period",
              "SELECT count() AS cases, countIf(status = 'closed') AS closed, "
              f"countIf({OPEN}) AS open_cases, "
              "round(if(count() = 0, 0, countIf(status = 'closed') / count()), 3) AS close_rate, "
              "round(if(countIf(status = 'closed') = 0, 0, countIf(status = 'closed' AND is_late = 0) / "
              "countIf(status = 'closed')), 3) AS on_time_rate, "
              "round(if(count() = 0, 0, countIf(rework_count > 0) / count()), 3) AS rework_rate, "
              "countIf(quick_handled = 1) AS quick_handled "
              "FROM (SELECT case_id, status, rework_count, quick_handled FROM cases FINAL "
              "WHERE $__timeFilter(opened) AND status != 'void') AS period_cases "
              "ANY LEFT JOIN (SELECT case_id, max(toUInt8(from_stage = 'handle' AND light = 'red')) AS is_late "
              "FROM case_transitions FINAL GROUP BY case_id) AS stage_facts USING case_id",
              ("cases", "closed", "open_cases", "close_rate", "on_time_rate", "rework_rate", "quick_handled"),
              "stat", dashboard="league"),
    WallQuery("cases_by_day", "每日案件 Cases by day",
              "SELECT toDate(opened) AS day, count() AS cases, countIf(status = 'closed') AS closed FROM cases FINAL "
              "WHERE $__timeFilter(opened) AND status != 'void' GROUP BY day ORDER BY day",
              ("day", "cases", "closed"), "barchart", dashboard="league"),
    WallQuery("field_kpis", "巡查考核 Inspector and station KPIs",
              "SELECT reporter_kind, reporter_id, sum(is_report) AS reports, sum(is_valid) AS valid_reports, "
              "round(if(sum(is_report) = 0, 0, sum(is_valid) / sum(is_report)), 3) AS valid_rate, "
              "sum(is_verification) AS verifications, sum(is_on_time) AS verified_on_time, "
              "round(if(sum(is_verification) = 0, 0, sum(is_on_time) / sum(is_verification)), 3) "
              "AS verify_on_time_rate "
              "FROM (SELECT reporter_kind, reporter_id, toUInt8(1) AS is_report, is_valid, "
              "toUInt8(0) AS is_verification, toUInt8(0) AS is_on_time "
              "FROM (SELECT reporter_kind, reporter_id, concat(source_kind, ':', source_id) AS source_key "
              "FROM signals FINAL "
              f"WHERE reporter_kind IN {FIELD_KINDS} AND $__timeFilter(ts)) AS field_reports "
              "ANY LEFT JOIN (SELECT arrayJoin(sources) AS source_key, toUInt8(1) AS is_valid FROM cases FINAL "
              "WHERE status != 'void') AS valid_sources USING source_key "
              "UNION ALL SELECT actor_kind AS reporter_kind, actor_id AS reporter_id, toUInt8(0) AS is_report, "
              "toUInt8(0) AS is_valid, toUInt8(1) AS is_verification, toUInt8(light != 'red') AS is_on_time "
              "FROM case_transitions FINAL WHERE action IN ('verify_pass', 'verify_fail') "
              f"AND actor_kind IN {FIELD_KINDS} AND $__timeFilter(ts)) AS field_facts "
              "GROUP BY reporter_kind, reporter_id ORDER BY reporter_kind, reporter_id",
              ("reporter_kind", "reporter_id", "reports", "valid_reports", "valid_rate", "verifications",
               "verified_on_time", "verify_on_time_rate"), "table", dashboard="field"),
    WallQuery("station_compliance", "零报告考核 Station daily-report compliance",
              f"SELECT reporter_id AS station, days_reported, {WORKING_DAYS_SQL} AS working_days, "
              "round(if(working_days = 0, 0, days_reported / working_days), 3) AS compliance "
              "FROM (SELECT reporter_id FROM zero_reports FINAL WHERE reporter_kind = 'station' "
              "UNION ALL SELECT reporter_id FROM signals FINAL WHERE reporter_kind = 'station') AS roster "
              "ANY LEFT JOIN (SELECT reporter_id, uniqExact(day) AS days_reported FROM ("
              "SELECT reporter_id, toDate(ts) AS day FROM zero_reports FINAL "
              "WHERE reporter_kind = 'station' AND $__timeFilter(ts) "
              "UNION ALL SELECT reporter_id, toDate(ts) AS day FROM signals FINAL "
              "WHERE reporter_kind = 'station' AND $__timeFilter(ts)) AS station_days "
              "WHERE toDayOfWeek(day) <= 5 GROUP BY reporter_id) AS reported USING reporter_id "
              "GROUP BY station, days_reported ORDER BY compliance, station",
              ("station", "days_reported", "working_days", "compliance"), "table", dashboard="field"),
    # ----- (d) sensors 物联感知
    WallQuery("heritage_alarms", "优秀历史建筑告警 Heritage-building alarms",
              "SELECT building, metric, count() AS alarms, max(value) AS max_value, max(threshold) AS threshold, "
              "max(ts) AS last_alarm FROM sensor_alarms FINAL WHERE metric != 'ebike_detected' AND $__timeFilter(ts) "
              "GROUP BY building, metric ORDER BY alarms DESC, building, metric",
              ("building", "metric", "alarms", "max_value", "threshold", "last_alarm"), "table", dashboard="sensors",
              live=True),
    WallQuery("ebike_detections", "电梯电瓶车 E-bike detections by building and lift",
              "SELECT building, device_id AS lift, count() AS detections, max(ts) AS last_detection "
              "FROM sensor_alarms FINAL WHERE metric = 'ebike_detected' AND $__timeFilter(ts) "
              "GROUP BY building, lift ORDER BY detections DESC, building, lift",
              ("building", "lift", "detections", "last_detection"), "table", dashboard="sensors", live=True),
    WallQuery("sensor_alarms_by_hour", "告警趋势 Sensor alarms by hour",
              "SELECT toStartOfHour(ts) AS time, metric, count() AS alarms FROM sensor_alarms FINAL "
              "WHERE $__timeFilter(ts) GROUP BY time, metric ORDER BY time, metric",
              ("time", "metric", "alarms"), "timeseries", dashboard="sensors"),
    WallQuery("alarm_episodes", "告警过程 Alarm episodes (one per sustained exceedance)",
              "SELECT building, device_id, metric, status, opened, round(duration_ms / 60000, 1) AS duration_minutes, "
              "peak, threshold FROM device_episodes FINAL WHERE $__timeFilter(opened) "
              "ORDER BY opened DESC, episode_id LIMIT 200",
              ("building", "device_id", "metric", "status", "opened", "duration_minutes", "peak", "threshold"),
              "table", dashboard="sensors", live=True),
    # the worst minute of each building: its highest one-minute peak relative to the threshold
    WallQuery("building_worst_minutes", "楼宇最差分钟 Buildings' worst minutes",
              "SELECT building, argMax(device_id, max / threshold) AS worst_device, "
              "argMax(metric, max / threshold) AS worst_metric, argMax(minute, max / threshold) AS worst_minute, "
              "argMax(max, max / threshold) AS worst_value, argMax(threshold, max / threshold) AS worst_threshold, "
              "round(max(max / threshold), 3) AS worst_ratio, countIf(max > threshold) AS minutes_over "
              "FROM device_minutes FINAL WHERE threshold > 0 AND $__timeFilter(minute) "
              "GROUP BY building ORDER BY worst_ratio DESC, building LIMIT 50",
              ("building", "worst_device", "worst_metric", "worst_minute", "worst_value", "worst_threshold",
               "worst_ratio", "minutes_over"), "table", dashboard="sensors"),
    WallQuery("device_trend", "设备分钟趋势 Device trend by minute",
              "SELECT minute AS time, metric, max AS peak, round(sum / n, 3) AS mean, n AS readings "
              "FROM device_minutes FINAL WHERE device_id = '${device_id:percentencode}' AND $__timeFilter(minute) "
              "ORDER BY time, metric",
              ("time", "metric", "peak", "mean", "readings"), "timeseries", dashboard="sensors"),
    # ----- case detail (target of the overdue list's links)
    WallQuery("case_detail", "案件 Case",
              "SELECT case_id, status, light, category_name, departments, level, origin, street, address, "
              "reporters, urge_count, rework_count, opened, "
              "toDateTime(intDiv(deadline_ms, 1000), 'Asia/Shanghai') AS deadline, stages "
              "FROM cases FINAL WHERE case_id = '${case_id:percentencode}'",
              ("case_id", "status", "light", "category_name", "departments", "level", "origin", "street", "address",
               "reporters", "urge_count", "rework_count", "opened", "deadline", "stages"), "table", dashboard="case"),
    WallQuery("case_history", "流转记录 Case transitions",
              "SELECT ts, from_stage, to_stage, action, actor_kind, actor_id, light, round(spent_ms / 60000, 1) "
              "AS spent_minutes, detail FROM case_transitions FINAL WHERE case_id = '${case_id:percentencode}' "
              "ORDER BY ts, event_id",
              ("ts", "from_stage", "to_stage", "action", "actor_kind", "actor_id", "light", "spent_minutes", "detail"),
              "table", dashboard="case"),
]

QUERIES: dict[str, WallQuery] = {q.name: q for q in _QUERIES}

_MACRO = re.compile(r"\$__(timeFilter|dateFilter|fromTime|toTime|interval_s|timeInterval|timeFilter_ms|"
                    r"fromTime_ms|toTime_ms|timeInterval_ms|dateTimeFilter|dt)\b(\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)\b")
# Grafana variable formats that cannot carry a quote, a backslash or a space into SQL.
SAFE_FORMATS = ("percentencode",)


def percentencode(value: str) -> str:
    """Grafana's ``percentencode`` format (encodeURIComponentStrict): all but ``A-Za-z0-9-_.~`` escaped."""
    return quote(value, safe="-_.~")


def expand(sql: str, from_s: int, to_s: int, interval_s: int = 60, variables: dict[str, str] | None = None) -> str:
    """Grafana's expansion: template variables first, then the ClickHouse plugin's macros."""
    variables = variables or {}

    def variable(match: re.Match[str]) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        if name.startswith("__"):
            return match.group(0)  # a macro, handled below
        if fmt not in SAFE_FORMATS:
            raise ValueError(f"template variable ${{{name}}} is pasted into SQL as typed; write "
                             f"${{{name}:percentencode}}")
        if name not in variables:
            raise KeyError(f"template variable ${name} has no value")
        return percentencode(variables[name])

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), match.group(3)
        if name == "timeFilter":
            column = _one_arg(name, args)
            return f"{column} >= toDateTime({from_s}) AND {column} <= toDateTime({to_s})"
        if name == "dateFilter":
            column = _one_arg(name, args)
            start = datetime.utcfromtimestamp(from_s).strftime("%Y-%m-%d")
            end = datetime.utcfromtimestamp(to_s).strftime("%Y-%m-%d")
            return f"{column} >= toDate('{start}') AND {column} <= toDate('{end}')"
        if name == "fromTime":
            return f"toDateTime({from_s})"
        if name == "toTime":
            return f"toDateTime({to_s})"
        if name == "interval_s":
            return str(max(int(interval_s), 1))
        raise ValueError(f"$__{name} expands to SQL that clickhouse-server 18.16 cannot run")

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))


def _one_arg(name: str, args: str | None) -> str:
    if args is None or not args.strip() or "," in args:
        raise ValueError(f"$__{name} takes exactly one column argument")
    return args.strip()


# Result rows of a query: column name -> value (numbers, strings, datetimes, arrays, as the driver gives them).
Rows = list[dict[str, object]]
WallSummary = dict[str, Rows]  # query name -> rows


class QueryStore(Protocol):
    def query(self, sql: str, params: dict[str, object] | None = None) -> Rows: ...


def run(store: QueryStore, name: str, from_s: int, to_s: int, interval_s: int = 60,
        variables: dict[str, str] | None = None) -> Rows:
    return store.query(expand(QUERIES[name].sql, from_s, to_s, interval_s, variables))


def today_range(now: datetime) -> tuple[int, int]:
    """From midnight in the city (Asia/Shanghai) to ``now``, as epoch seconds."""
    local = now.astimezone(CITY_TZ)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()), int(local.timestamp())


def wall_summary(store: QueryStore, now: datetime | None = None) -> WallSummary:
    """Today's figures of every live-view query: name -> rows (what the wall shows, for the terminal)."""
    now = now or datetime.now(CITY_TZ)
    if now.tzinfo is None:
        raise ValueError("wall_summary needs a timezone-aware now")
    from_s, to_s = today_range(now)
    return {name: run(store, name, from_s, to_s) for name, q in QUERIES.items() if q.live}


def last_hours_range(now: datetime, hours: int) -> tuple[int, int]:
    return int((now - timedelta(hours=hours)).timestamp()), int(now.timestamp())


def format_summary(summary: WallSummary, width: int = 100) -> str:
    """Plain-text rendering of :func:`wall_summary` for a terminal (one block per query, wall order)."""
    blocks = []
    for name, rows in summary.items():
        title = QUERIES[name].title if name in QUERIES else name
        lines = [f"== {title}"]
        if not rows:
            lines.append("   (none yet)")
        for row in rows[:10]:
            cells = []
            for key, value in row.items():
                if isinstance(value, datetime):
                    value = value.astimezone(CITY_TZ).strftime("%H:%M")
                elif isinstance(value, float):
                    value = f"{value:.3g}"
                cells.append(f"{key}={value}")
            lines.append(("   " + "  ".join(cells))[:width])
        if len(rows) > 10:
            lines.append(f"   ... {len(rows) - 10} more")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
