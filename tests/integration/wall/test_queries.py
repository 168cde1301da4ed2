"""Every wall query (= every Grafana panel's SQL) on both engines, on seeded rows written twice."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from streams.core.times import CITY_TZ as TZ
from streams.storage.store import Store
from streams.wall import queries as wall

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=TZ)
FROM_S, TO_S = wall.today_range(NOW)


def ms(hour: int, minute: int = 0, day: int = 20) -> int:
    return int(datetime(2026, 11, day, hour, minute, tzinfo=TZ).timestamp() * 1000)


def case(case_id: str, version: int, **fields: Any) -> dict[str, Any]:
    row = {"case_id": case_id, "version": version, "updated_ms": ms(10) + version, "opened_ms": ms(9),
           "category_code": "0101", "category_name": "乱设摊", "departments": ["城管中队"], "level": 3,
           "status": "dispatch", "origin": "12345", "street": "湖南路街道", "street_code": "hn", "light": "green",
           "lat": 31.21, "lon": 121.44, "reporters": 1, "sources": [], "kb_version": "kb1", "stages": "{}"}
    row.update(fields)
    return row


SEED: dict[str, list[dict[str, Any]]] = {
    "cases": [
        # c1 moves on: only version 2 may be seen (handle, red, overdue).
        case("hn-20261120-00000001", 1, status="dispatch", light="yellow", deadline_ms=ms(12)),
        case("hn-20261120-00000001", 2, status="handle", light="red", deadline_ms=ms(12), urge_count=1),
        case("hn-20261120-00000002", 3, origin="inspector", status="closed", quick_handled=1, dispatched_by="street",
             on_time=1, handling_ms=2 * 3600_000, closed_ms=ms(11), departments=["物业", "房管办"],
             units=["湖南物业", "湖南路街道房管办"], sources=["inspector:r1"],
             category_code="0202", category_name="暴露垃圾"),
        case("hn-20261120-00000003", 1, origin="station", status="closed", on_time=0, rework_count=1,
             units=["湖南路街道城管中队"],
             handling_ms=4 * 3600_000, closed_ms=ms(13), sources=["station:r2"], dispatched_by="district"),
        case("hn-20261120-00000004", 1, origin="sensor", status="register", light="green", departments=[],
             lat=None, lon=None, category_code="0303", category_name="历史建筑振动", deadline_ms=ms(23)),
        case("hn-20261120-00000005", 1, origin="camera", status="void", departments=["物业"], sources=["committee:r3"],
             dispatched_by="station"),
        case("hn-20261119-00000006", 1, origin="12345", status="closed", opened_ms=ms(9, day=19)),
    ],
    "signals": [
        {"signal_id": "s1", "source": "hotline", "source_kind": "12345", "source_id": "call1", "ts_ms": ms(9)},
        {"signal_id": "s2", "source": "hotline", "source_kind": "12345", "source_id": "call2", "ts_ms": ms(9, 30)},
        {"signal_id": "s3", "source": "field", "source_kind": "inspector", "source_id": "r1", "ts_ms": ms(10),
         "reporter_id": "I1", "reporter_kind": "inspector", "handled_on_spot": 1},
        {"signal_id": "s4", "source": "field", "source_kind": "station", "source_id": "r2", "ts_ms": ms(10, 5),
         "reporter_id": "S1", "reporter_kind": "station"},
        {"signal_id": "s5", "source": "field", "source_kind": "committee", "source_id": "r3", "ts_ms": ms(10, 10),
         "reporter_id": "C1", "reporter_kind": "committee"},
        {"signal_id": "s6", "source": "field", "source_kind": "inspector", "source_id": "r4", "ts_ms": ms(10, 20),
         "reporter_id": "I1", "reporter_kind": "inspector"},
        {"signal_id": "s7", "source": "hotline", "source_kind": "12345", "source_id": "old", "ts_ms": ms(9, day=19)},
    ],
    "case_transitions": [
        {"event_id": "e1", "case_id": "hn-20261120-00000002", "ts_ms": ms(10, 30), "from_stage": "verify",
         "to_stage": "close", "action": "verify_pass", "actor_kind": "inspector", "actor_id": "I1", "light": "green"},
        {"event_id": "e2", "case_id": "hn-20261120-00000003", "ts_ms": ms(12, 30), "from_stage": "verify",
         "to_stage": "handle", "action": "verify_fail", "actor_kind": "inspector", "actor_id": "I1", "light": "red"},
        {"event_id": "e3", "case_id": "hn-20261120-00000003", "ts_ms": ms(12, 50), "from_stage": "verify",
         "to_stage": "close", "action": "verify_pass", "actor_kind": "station", "actor_id": "S1", "light": "yellow"},
        {"event_id": "e4", "case_id": "hn-20261120-00000001", "ts_ms": ms(9, 5), "from_stage": "register",
         "to_stage": "dispatch", "action": "dispatch", "actor_kind": "center", "actor_id": "hn", "light": "green"},
        # c1's 处置 went red (the department's own stage); c3 was extended 延期 while in 处置
        {"event_id": "e5", "case_id": "hn-20261120-00000001", "ts_ms": ms(12, 1), "from_stage": "handle",
         "to_stage": "handle", "action": "urge", "actor_kind": "system", "actor_id": "sla", "light": "red"},
        {"event_id": "e6", "case_id": "hn-20261120-00000003", "ts_ms": ms(11), "from_stage": "handle",
         "to_stage": "handle", "action": "extend", "actor_kind": "department", "actor_id": "城管中队",
         "light": "green"},
    ],
    "sla_alerts": [
        {"alert_id": "a1", "case_id": "hn-20261120-00000001", "ts_ms": ms(11), "kind": "urge", "light": "yellow"},
        {"alert_id": "a2", "case_id": "hn-20261120-00000001", "ts_ms": ms(11, 30), "kind": "sla_yellow",
         "light": "yellow"},
        {"alert_id": "a3", "case_id": "hn-20261120-00000001", "ts_ms": ms(12, 1), "kind": "sla_red", "light": "red"},
        {"alert_id": "a4", "case_id": "hn-20261120-00000001", "ts_ms": ms(12, 2), "kind": "urge", "light": "red"},
        {"alert_id": "a5", "case_id": "ZR-STA-002-20261120", "ts_ms": ms(12), "kind": "zero_report_missing",
         "stage": "zero_report", "light": "red", "departments": ["街道网格中心"], "deadline_ms": ms(12)},
        {"alert_id": "a6", "case_id": "ZR-STA-013-20261119", "ts_ms": ms(17, day=19), "kind": "zero_report_missing",
         "stage": "zero_report", "light": "red", "departments": ["街道网格中心"], "deadline_ms": ms(17, day=19)},
    ],
    "dispatches": [
        {"dispatch_id": "d1", "case_id": "hn-20261120-00000001", "ts_ms": ms(9, 5), "primary_department": "城管中队",
         "departments": ["城管中队"], "level": 3},
        {"dispatch_id": "d2", "case_id": "hn-20261120-00000003", "ts_ms": ms(10, 6), "primary_department": "城管中队",
         "departments": ["城管中队"], "level": 2},
        {"dispatch_id": "d3", "case_id": "hn-20261120-00000005", "ts_ms": ms(10, 11), "primary_department": "物业",
         "departments": ["物业"], "level": 4},
    ],
    "dead_letters": [
        {"topic": "hotline.calls", "partition": 0, "offset": 1, "reason": "schema", "ts_ms": ms(9), "original": "x"},
        {"topic": "hotline.calls", "partition": 0, "offset": 2, "reason": "schema", "ts_ms": ms(9), "original": "y"},
        {"topic": "iot.readings", "partition": 1, "offset": 7, "reason": "unknown device", "ts_ms": ms(9)},
    ],
    "triage": [{"triage_id": "t1", "topic": "hotline.calls", "reason": "low_confidence", "ts_ms": ms(9),
                "record": "{}"}],
    "sensor_alarms": [
        {"alarm_id": "al1", "device_id": "vib-1", "building": "武康大楼", "ts_ms": ms(8),
         "metric": "vibration_mm_s", "value": 3.2, "threshold": 2.5},
        {"alarm_id": "al2", "device_id": "vib-1", "building": "武康大楼", "ts_ms": ms(8, 10),
         "metric": "vibration_mm_s", "value": 4.0, "threshold": 2.5},
        {"alarm_id": "al3", "device_id": "tilt-1", "building": "武康大楼", "ts_ms": ms(8, 20),
         "metric": "tilt_permille", "value": 1.1, "threshold": 1.0},
        {"alarm_id": "al4", "device_id": "lift-A", "building": "6号楼", "ts_ms": ms(7), "metric": "ebike_detected",
         "value": 1},
        {"alarm_id": "al5", "device_id": "lift-A", "building": "6号楼", "ts_ms": ms(7, 30),
         "metric": "ebike_detected", "value": 1},
        {"alarm_id": "al6", "device_id": "lift-B", "building": "6号楼", "ts_ms": ms(8), "metric": "ebike_detected",
         "value": 1},
    ],
    "webhook_deliveries": [
        {"delivery_id": "w1", "department": "房管办", "case_id": "c1", "kind": "dispatch", "idempotency_key": "k1",
         "attempt": 1, "status": "retry", "http_status": 500, "latency_ms": 30.0, "ts_ms": ms(9)},
        {"delivery_id": "w1", "department": "房管办", "case_id": "c1", "kind": "dispatch", "idempotency_key": "k1",
         "attempt": 2, "status": "delivered", "http_status": 204, "latency_ms": 10.0, "ts_ms": ms(9, 1)},
        {"delivery_id": "w2", "department": "物业", "case_id": "c2", "kind": "urge", "idempotency_key": "k2",
         "attempt": 8, "status": "dead", "http_status": 503, "latency_ms": 20.0, "ts_ms": ms(9, 2)},
    ],
    "device_minutes": [
        {"device_id": "vib-1", "metric": "vibration_mm_s", "minute_ms": ms(8, 1), "n": 60, "min": 0.5, "max": 3.2,
         "sum": 90.0, "last": 1.0, "building": "武康大楼", "threshold": 2.5},
        {"device_id": "vib-1", "metric": "vibration_mm_s", "minute_ms": ms(8, 2), "n": 30, "min": 0.4, "max": 1.2,
         "sum": 24.0, "last": 0.9, "building": "武康大楼", "threshold": 2.5},
        {"device_id": "tilt-1", "metric": "tilt_permille", "minute_ms": ms(8, 1), "n": 1, "min": 1.1, "max": 1.1,
         "sum": 1.1, "last": 1.1, "building": "武康大楼", "threshold": 1.0},
        {"device_id": "vib-9", "metric": "vibration_mm_s", "minute_ms": ms(9, 30), "n": 2, "min": 4.0, "max": 4.2,
         "sum": 8.2, "last": 4.0, "building": "黑石公寓", "threshold": 3.5},
        {"device_id": "lift-A", "metric": "ebike_detected", "minute_ms": ms(7), "n": 3, "min": 0.0, "max": 1.0,
         "sum": 1.0, "last": 0.0, "building": "6号楼", "threshold": 0.0},
        {"device_id": "vib-1", "metric": "vibration_mm_s", "minute_ms": ms(8, 1, day=19), "n": 1, "min": 9.0,
         "max": 9.0, "sum": 9.0, "last": 9.0, "building": "武康大楼", "threshold": 2.5},
    ],
    "device_episodes": [
        {"episode_id": "ep1", "device_id": "vib-1", "metric": "vibration_mm_s", "building": "武康大楼",
         "status": "open", "ts_ms": ms(8, 1), "opened_ms": ms(8, 1), "peak": 3.0, "peak_ms": ms(8, 1),
         "threshold": 2.5, "version": 1},
        {"episode_id": "ep1", "device_id": "vib-1", "metric": "vibration_mm_s", "building": "武康大楼",
         "status": "closed", "ts_ms": ms(8, 9), "opened_ms": ms(8, 1), "closed_ms": ms(8, 9), "peak": 3.2,
         "peak_ms": ms(8, 1), "duration_ms": 8 * 60_000, "threshold": 2.5, "version": 2},
        {"episode_id": "ep2", "device_id": "vib-9", "metric": "vibration_mm_s", "building": "黑石公寓",
         "status": "open", "ts_ms": ms(9, 30), "opened_ms": ms(9, 30), "peak": 4.2, "peak_ms": ms(9, 30),
         "threshold": 3.5, "version": 1},
    ],
    "patrol_days": [
        {"inspector_id": "I1", "day_ms": ms(0), "grid_id": "hn-G1", "street": "湖南路街道", "distance_m": 5200.0,
         "moving_s": 9000, "idle_s": 1800, "idle_periods": 2, "fixes": 300, "cells_covered": 6, "cells_assigned": 7,
         "cells_assigned_covered": 5, "first_ms": ms(8), "last_ms": ms(12), "version": 280},
        {"inspector_id": "I1", "day_ms": ms(0), "grid_id": "hn-G1", "street": "湖南路街道", "distance_m": 5400.0,
         "moving_s": 9600, "idle_s": 1800, "idle_periods": 2, "fixes": 310, "cells_covered": 7, "cells_assigned": 7,
         "cells_assigned_covered": 7, "first_ms": ms(8), "last_ms": ms(13), "version": 310},   # later that day
        {"inspector_id": "I2", "day_ms": ms(0), "grid_id": "hn-G2", "street": "湖南路街道", "distance_m": 8000.0,
         "moving_s": 12000, "idle_s": 0, "idle_periods": 0, "fixes": 400, "cells_covered": 3, "cells_assigned": 7,
         "cells_assigned_covered": 2, "first_ms": ms(8), "last_ms": ms(14), "version": 400},
        {"inspector_id": "I1", "day_ms": ms(0, day=19), "grid_id": "hn-G1", "street": "湖南路街道",
         "distance_m": 9999.0, "cells_assigned": 7, "version": 1},                                # another day
    ],
    "zero_reports": [{"report_id": "z1", "reporter_id": "S1", "reporter_kind": "station", "ts_ms": ms(8),
                      "community": "复兴居委", "street": "湖南路街道"},
                     # S2 reported yesterday only: on today's roster, with no report today
                     {"report_id": "z2", "reporter_id": "S2", "reporter_kind": "station", "ts_ms": ms(8, day=19),
                      "community": "湖南居委", "street": "湖南路街道"}],
    "inspector_tracks": [
        {"inspector_id": "I1", "ts_ms": ms(8), "lat": 31.2, "lon": 121.4, "cell": "c1", "street": "湖南路街道"},
        {"inspector_id": "I1", "ts_ms": ms(8, 1), "lat": 31.2, "lon": 121.4, "cell": "c1", "street": "湖南路街道"},
        {"inspector_id": "I1", "ts_ms": ms(8, 2), "lat": 31.3, "lon": 121.5, "cell": "c2", "street": "湖南路街道"},
    ],
}

# What each query must return on the seed (dicts compared on the listed keys, in order).
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "signals_by_source": [{"source_kind": "12345", "signals": 2}, {"source_kind": "inspector", "signals": 2},
                          {"source_kind": "committee", "signals": 1}, {"source_kind": "station", "signals": 1}],
    "cases_by_origin": [{"source": s, "cases": 1}
                        for s in sorted(["12345热线", "街道网格中心", "居民区工作站", "传感器", "摄像头"])],
    "cases_by_stage": [{"stage": "register", "stage_zh": "立案", "cases": 1},
                       {"stage": "handle", "stage_zh": "处置", "cases": 1},
                       {"stage": "closed", "stage_zh": "结案", "cases": 2},
                       {"stage": "void", "stage_zh": "作废", "cases": 1}],
    "lights": [{"green": 1, "yellow": 0, "red": 1}],
    "urges": [{"urges": 2, "yellow_alerts": 1, "red_alerts": 1, "escalations": 0}],
    "quick_vs_dispatched": [{"street_quick_handled": 1, "street_dispatched": 0, "district_dispatched": 1,
                             "station_handled": 1}],
    "top_categories": [{"category_code": "0101", "category_name": "乱设摊", "cases": 3},
                       {"category_code": "0202", "category_name": "暴露垃圾", "cases": 1},
                       {"category_code": "0303", "category_name": "历史建筑振动", "cases": 1}],
    "cases_by_hour": [{"time": datetime(2026, 11, 20, 9, tzinfo=TZ), "cases": 5}],
    "signals_by_interval": [{"time": datetime(2026, 11, 20, 9, tzinfo=TZ), "source_kind": "12345", "signals": 2},
                            {"time": datetime(2026, 11, 20, 10, tzinfo=TZ), "source_kind": "committee", "signals": 1},
                            {"time": datetime(2026, 11, 20, 10, tzinfo=TZ), "source_kind": "inspector", "signals": 2},
                            {"time": datetime(2026, 11, 20, 10, tzinfo=TZ), "source_kind": "station", "signals": 1}],
    "open_cases_map": [{"case_id": "hn-20261120-00000001", "status": "handle", "light": "red", "lat": 31.21,
                        "lon": 121.44}],
    "dead_letters_by_topic": [{"topic": "hotline.calls", "reason": "schema", "dead_letters": 2},
                              {"topic": "iot.readings", "reason": "unknown device", "dead_letters": 1}],
    "triage_by_reason": [{"topic": "hotline.calls", "reason": "low_confidence", "records": 1}],
    "webhook_outcomes": [
        {"department": "物业", "delivered": 0, "retries": 0, "failed": 0, "dead_lettered": 1, "avg_latency_ms": 0.0},
        {"department": "房管办", "delivered": 1, "retries": 1, "failed": 0, "dead_lettered": 0, "avg_latency_ms": 10.0},
    ],
    "dispatches_by_department": [{"department": "城管中队", "dispatches": 2}, {"department": "物业", "dispatches": 1}],
    "department_league": [
        {"department": "物业", "cases": 1, "closed": 1, "close_rate": 1.0, "on_time_rate": 1.0, "rework_rate": 0.0,
         "avg_handling_hours": 2.0},
        {"department": "城管中队", "cases": 2, "closed": 1, "close_rate": 0.5, "on_time_rate": 0.0, "rework_rate": 0.5,
         "avg_handling_hours": 4.0},
    ],
    "overdue_cases": [{"case_id": "hn-20261120-00000001", "department": "城管中队", "status": "handle", "light": "red",
                       "deadline": datetime(2026, 11, 20, 12, tzinfo=TZ), "overdue_hours": 3.0}],
    "field_reporters": [
        {"reporter_kind": "inspector", "reporter_id": "I1", "reports": 2, "handled_on_spot": 1, "valid_reports": 1,
         "valid_rate": 0.5},
        {"reporter_kind": "committee", "reporter_id": "C1", "reports": 1, "handled_on_spot": 0, "valid_reports": 0,
         "valid_rate": 0.0},
        {"reporter_kind": "station", "reporter_id": "S1", "reports": 1, "handled_on_spot": 0, "valid_reports": 1,
         "valid_rate": 1.0},
    ],
    "field_verifications": [{"actor_kind": "inspector", "actor_id": "I1", "verifications": 2, "on_time": 1,
                             "on_time_rate": 0.5},
                            {"actor_kind": "station", "actor_id": "S1", "verifications": 1, "on_time": 1,
                             "on_time_rate": 1.0}],
    "zero_reports": [{"reporter_kind": "station", "reporter_id": "S1", "street": "湖南路街道", "zero_reports": 1}],
    "inspector_league": [
        {"inspector_id": "I2", "grid": "hn-G2", "days": 1, "distance_km": 8.0, "moving_hours": 3.33, "idle_hours": 0.0,
         "idle_periods": 0, "coverage": 0.286, "reports": 0},
        {"inspector_id": "I1", "grid": "hn-G1", "street": "湖南路街道", "days": 1, "distance_km": 5.4,
         "moving_hours": 2.67, "idle_hours": 0.5, "idle_periods": 2, "coverage": 1.0, "reports": 2}],
    "zero_report_alerts": [{"station": "STA-002", "deadline": datetime(2026, 11, 20, 12, tzinfo=TZ),
                            "notified": "街道网格中心"}],
    "patrol_coverage": [{"inspector_id": "I1", "fixes": 3, "cells": 2,
                         "first_fix": datetime(2026, 11, 20, 8, tzinfo=TZ),
                         "last_fix": datetime(2026, 11, 20, 8, 2, tzinfo=TZ)}],
    "heritage_alarms": [{"building": "武康大楼", "metric": "vibration_mm_s", "alarms": 2, "max_value": 4.0,
                         "threshold": 2.5},
                        {"building": "武康大楼", "metric": "tilt_permille", "alarms": 1, "max_value": 1.1,
                         "threshold": 1.0}],
    "ebike_detections": [{"building": "6号楼", "lift": "lift-A", "detections": 2},
                         {"building": "6号楼", "lift": "lift-B", "detections": 1}],
    "sensor_alarms_by_hour": [{"time": datetime(2026, 11, 20, 7, tzinfo=TZ), "metric": "ebike_detected", "alarms": 2},
                              {"time": datetime(2026, 11, 20, 8, tzinfo=TZ), "metric": "ebike_detected", "alarms": 1},
                              {"time": datetime(2026, 11, 20, 8, tzinfo=TZ), "metric": "tilt_permille", "alarms": 1},
                              {"time": datetime(2026, 11, 20, 8, tzinfo=TZ), "metric": "vibration_mm_s", "alarms": 2}],
    "alarm_episodes": [
        {"building": "黑石公寓", "device_id": "vib-9", "status": "open", "duration_minutes": 0.0, "peak": 4.2},
        {"building": "武康大楼", "device_id": "vib-1", "status": "closed",
         "opened": datetime(2026, 11, 20, 8, 1, tzinfo=TZ), "duration_minutes": 8.0, "peak": 3.2, "threshold": 2.5}],
    "building_worst_minutes": [
        {"building": "武康大楼", "worst_device": "vib-1", "worst_metric": "vibration_mm_s",
         "worst_minute": datetime(2026, 11, 20, 8, 1, tzinfo=TZ), "worst_value": 3.2, "worst_threshold": 2.5,
         "worst_ratio": 1.28, "minutes_over": 2},
        {"building": "黑石公寓", "worst_device": "vib-9", "worst_ratio": 1.2, "minutes_over": 1}],
    "device_trend": [{"time": datetime(2026, 11, 20, 8, 1, tzinfo=TZ), "metric": "vibration_mm_s", "peak": 3.2,
                      "mean": 1.5, "readings": 60},
                     {"time": datetime(2026, 11, 20, 8, 2, tzinfo=TZ), "metric": "vibration_mm_s", "peak": 1.2,
                      "mean": 0.8, "readings": 30}],
    "case_detail": [{"case_id": "hn-20261120-00000001", "status": "handle", "light": "red", "urge_count": 1,
                     "departments": ["城管中队"], "deadline": datetime(2026, 11, 20, 12, tzinfo=TZ)}],
    "case_history": [{"action": "dispatch", "from_stage": "register", "to_stage": "dispatch", "actor_id": "hn"},
                     {"action": "urge", "from_stage": "handle", "to_stage": "handle", "light": "red"}],
    # Every department on a case is credited; 按期 counts only the department's own stage (处置): c3's
    # verification went red (the inspector's stage), so it is on time for 城管中队 although cases.on_time = 0.
    "department_kpis": [
        {"department": "房管办", "cases": 1, "closed": 1, "close_rate": 1.0, "on_time_rate": 1.0, "rework_rate": 0.0,
         "extension_rate": 0.0, "avg_handling_hours": 2.0, "score": 100.0, "grade": "A"},
        {"department": "物业", "cases": 1, "closed": 1, "close_rate": 1.0, "on_time_rate": 1.0, "rework_rate": 0.0,
         "extension_rate": 0.0, "avg_handling_hours": 2.0, "score": 100.0, "grade": "A"},
        {"department": "城管中队", "cases": 2, "closed": 1, "close_rate": 0.5, "on_time_rate": 1.0, "rework_rate": 0.5,
         "extension_rate": 0.5, "avg_handling_hours": 4.0, "score": 70.0, "grade": "C"},
    ],
    # per street instance; c1 was written before instances (no units): its kind stands for the unit
    "unit_kpis": [
        {"department": "城管中队", "unit": "湖南路街道城管中队", "cases": 1, "closed": 1, "on_time_rate": 1.0,
         "rework_rate": 1.0, "extension_rate": 1.0, "score": 70.0, "grade": "C"},
        {"department": "城管中队", "unit": "城管中队", "cases": 1, "closed": 0, "score": 30.0, "grade": "E"},
        {"department": "房管办", "unit": "湖南路街道房管办", "cases": 1, "closed": 1, "score": 100.0, "grade": "A"},
        {"department": "物业", "unit": "湖南物业", "cases": 1, "closed": 1, "score": 100.0, "grade": "A"},
    ],
    "field_kpis": [
        {"reporter_kind": "committee", "reporter_id": "C1", "reports": 1, "valid_reports": 0, "valid_rate": 0.0,
         "verifications": 0, "verified_on_time": 0, "verify_on_time_rate": 0.0},
        {"reporter_kind": "inspector", "reporter_id": "I1", "reports": 2, "valid_reports": 1, "valid_rate": 0.5,
         "verifications": 2, "verified_on_time": 1, "verify_on_time_rate": 0.5},
        {"reporter_kind": "station", "reporter_id": "S1", "reports": 1, "valid_reports": 1, "valid_rate": 1.0,
         "verifications": 1, "verified_on_time": 1, "verify_on_time_rate": 1.0},
    ],
    # c1..c4 of today (c5 void, c6 yesterday); c3 closed after a red verification but a green 处置
    "period_totals": [{"cases": 4, "closed": 2, "open_cases": 2, "close_rate": 0.5, "on_time_rate": 1.0,
                       "rework_rate": 0.25, "quick_handled": 1}],
    "cases_by_day": [{"day": date(2026, 11, 20), "cases": 4, "closed": 2}],
    "station_compliance": [{"station": "S2", "days_reported": 0, "working_days": 1, "compliance": 0.0},
                           {"station": "S1", "days_reported": 1, "working_days": 1, "compliance": 1.0}],
}
VARIABLES = {"case_id": "hn-20261120-00000001", "device_id": "vib-1"}


def seed(store: Store) -> None:
    for table, rows in SEED.items():
        store.insert(table, rows)
        store.insert(table, rows)  # a retried batch: must change no figure


def test_every_query_has_expectations() -> None:
    assert set(EXPECTED) == set(wall.QUERIES)


@pytest.mark.parametrize("name", sorted(wall.QUERIES))
def test_wall_query_on_seeded_rows(store: Store, name: str) -> None:
    seed(store)
    query = wall.QUERIES[name]
    rows = wall.run(store, name, FROM_S, TO_S, interval_s=3600, variables=VARIABLES)
    for row in rows:
        assert tuple(row) == query.columns
    expected = EXPECTED[name]
    # not strict: the contents first (the clearer failure), the lengths next
    assert [{k: row[k] for k in exp} for row, exp in zip(rows, expected, strict=False)] == expected
    assert len(rows) == len(expected)


def test_wall_summary_covers_live_queries(store: Store) -> None:
    seed(store)
    summary = wall.wall_summary(store, NOW)
    assert set(summary) == {n for n, q in wall.QUERIES.items() if q.live}
    assert summary["lights"] == [{"green": 1, "yellow": 0, "red": 1}]
    assert summary["dead_letters_by_topic"][0]["dead_letters"] == 2


def test_wall_summary_is_empty_before_any_row(store: Store) -> None:
    summary = wall.wall_summary(store, NOW)
    assert summary["signals_by_source"] == []
    assert summary["lights"] == [{"green": 0, "yellow": 0, "red": 0}]
