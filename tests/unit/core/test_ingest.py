"""The Ingestor on every raw feed: signals, triage, device commands and store rows."""
from __future__ import annotations

import json
from typing import Any

import pytest

from streams.bus import topics
from streams.bus.codec import iso_to_ms, registry
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge.knowledge import Knowledge
from streams.core.knowledge.sensors import EBIKE_COMMAND
from streams.core.model import IngestResult
from streams.core.privacy import Pseudonymizer, PseudonymKey
from streams.settings import Settings

INGEST_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


@pytest.fixture()
def ingestor(kb: Knowledge) -> Ingestor:
    return Ingestor(kb)


def run(ingestor: Ingestor, topic: str, record: dict[str, Any]) -> IngestResult:
    """Validate the record against its raw schema (as the worker does), ingest, and check the outputs' schemas."""
    valid = registry().from_json(topics.RAW_SCHEMAS[topic], record)
    result = ingestor.ingest(topics.RAW_SCHEMAS[topic], valid, INGEST_MS)
    for s in result.signals:
        registry().encode("signal", s.to_dict())
    for t in result.triage:
        registry().encode("triage", t.__dict__)
    for c in result.commands:
        registry().encode("iot_command", c.__dict__)
    return result


def call(call_id: str = "C1", text: str = "楼上邻居天天半夜跺脚，噪音太大", **kw: Any) -> dict[str, Any]:
    return {"call_id": call_id, "line": "12345", "received_at": "2026-11-20T09:30:00+08:00",
            "caller": "13800000000", "text": text, **kw}


def report(report_id: str = "R1", **kw: Any) -> dict[str, Any]:
    base = {"report_id": report_id, "reporter_id": "insp-007", "reporter_kind": "inspector",
            "reported_at": "2026-11-20T10:00:00+08:00"}
    base.update(kw)
    return base


# ---------------------------------------------------------------- hotline.calls
def test_hotline_call_becomes_a_located_classified_signal(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.HOTLINE_CALLS, call(address="钦江路15号"))
    [s] = result.signals
    assert (s.category_name, s.community, s.street, s.street_code) == ("噪声扰民", "怡桂苑", "虹梅街道", "XH07")
    assert s.source == "hotline" and s.source_kind == "12345" and s.source_id == "C1"
    assert s.ts_ms == iso_to_ms("2026-11-20T09:30:00+08:00") and s.ingest_ms == INGEST_MS
    assert "compound" in s.context
    assert s.reporter_id == ingestor.pseudonyms.caller("13800000000") and "13800000000" not in json.dumps(s.to_dict())
    assert not result.triage


def test_callers_get_keyed_pseudonyms_and_numbers_in_the_text_are_masked(kb: Knowledge) -> None:
    keyed = Pseudonymizer(PseudonymKey.from_secret("deployment-secret-for-this-test-0001"))
    ingestor = Ingestor(kb, pseudonyms=keyed)
    text = "楼上邻居天天半夜跺脚，噪音太大，我电话13912345678，身份证310104198001011234"
    [s] = run(ingestor, topics.HOTLINE_CALLS, call(text=text, address="钦江路15号")).signals
    assert s.reporter_id == keyed.caller("13800000000") and s.reporter_id.startswith(f"caller-{keyed.current.key_id}-")
    assert "139****5678" in s.text and "13912345678" not in s.text and "198001011234" not in s.text
    other = Ingestor(kb, pseudonyms=Pseudonymizer(PseudonymKey.from_secret("another-deployment-secret-000002")))
    assert run(other, topics.HOTLINE_CALLS, call(address="钦江路15号")).signals[0].reporter_id != s.reporter_id


def test_numbers_in_triage_records_are_masked(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.HOTLINE_CALLS, call(text="你好，我想问一下今天天气怎么样，回电13912345678",
                                                      address="南京东路1号 电话021-64871234"))
    [t] = result.triage
    assert "13912345678" not in t.record and "64871234" not in t.record and "64871234" not in t.reason
    assert "139****5678" in t.record


def test_signal_ids_are_deterministic(kb: Knowledge) -> None:
    a = run(Ingestor(kb), topics.HOTLINE_CALLS, call(address="钦江路15号")).signals[0]
    b = run(Ingestor(kb), topics.HOTLINE_CALLS, call(address="钦江路15号")).signals[0]
    c = run(Ingestor(kb), topics.HOTLINE_CALLS, call("C2", address="钦江路15号")).signals[0]
    assert a.signal_id == b.signal_id != c.signal_id


def test_low_confidence_goes_to_triage(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.HOTLINE_CALLS, call(text="那个东西坏了好几天了", address="钦江路15号"))
    assert not result.signals
    [t] = result.triage
    assert "low classification confidence" in t.reason and t.topic == topics.HOTLINE_CALLS
    assert t.confidence is not None and t.confidence < Settings().triage_confidence and t.best_category
    assert "13800000000" not in t.record  # the caller's number is masked in triage too


@pytest.mark.parametrize("text", ["小区门口有人卖假证", "你好，我想问一下今天天气怎么样"])
def test_out_of_scope_goes_to_triage_with_that_reason(ingestor: Ingestor, text: str) -> None:
    """A call no category fits is not forced into the nearest one (卖假证 is no 占道经营)."""
    result = run(ingestor, topics.HOTLINE_CALLS, call(text=text, address="钦江路15号"))
    assert not result.signals
    [t] = result.triage
    assert t.reason.startswith("out of scope: the text fits no category")
    assert t.best_category and t.confidence is not None  # the nearest guess, for the officer


def test_threshold_comes_from_settings(kb: Knowledge) -> None:
    text = "楼上邻居半夜很吵"  # right (噪声扰民) but not certain
    assert 0.55 <= kb.classify(text).confidence < 1.0
    assert run(Ingestor(kb), topics.HOTLINE_CALLS, call(text=text, address="钦江路15号")).signals
    strict = Ingestor(kb, triage_confidence=1.0)
    assert run(strict, topics.HOTLINE_CALLS, call(text=text, address="钦江路15号")).triage


def test_unknown_location_goes_to_triage_with_reason(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.HOTLINE_CALLS, call(address="南京东路1号"))
    [t] = result.triage
    assert "unknown location" in t.reason and "南京东路1号" in t.reason
    assert t.best_category == "E0103"


def test_empty_text_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="empty"):
        run(ingestor, topics.HOTLINE_CALLS, call(text="   "))


def test_unknown_feed_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="feed"):
        ingestor.ingest("case_action", {}, INGEST_MS)


# ---------------------------------------------------------------- field.reports
def test_structured_category_wins_over_text(ingestor: Ingestor) -> None:
    rec = report(category="E0201", text="楼上邻居噪音太大", address="钦江路101号", photos=["p1.jpg"],
                 handled_on_spot=True, after_photos=["p2.jpg"])
    [s] = run(ingestor, topics.FIELD_REPORTS, rec).signals
    assert s.category_name == "非法小广告" and s.confidence == 1.0
    assert s.handled_on_spot is True and s.photos == ["p1.jpg"] and s.after_photos == ["p2.jpg"]
    assert s.source == "field" and s.source_kind == "inspector" and s.reporter_id == "insp-007"


def test_structured_category_by_chinese_name(ingestor: Ingestor) -> None:
    [s] = run(ingestor, topics.FIELD_REPORTS, report(category="私装地锁", address="斜土路1175弄")).signals
    assert s.category_code == "B0601" and s.community == "江南新村"
    assert ingestor.knowledge.route(s.category_code, s.context).level == 4


def test_unknown_structured_category_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="乱扔烟头"):
        run(ingestor, topics.FIELD_REPORTS, report(category="乱扔烟头", address="钦江路15号"))


def test_report_without_category_or_text_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="neither"):
        run(ingestor, topics.FIELD_REPORTS, report(address="钦江路15号"))


def test_text_report_is_classified(ingestor: Ingestor) -> None:
    [s] = run(ingestor, topics.FIELD_REPORTS, report(text="路口井盖没了，一个大洞", lat=31.1725, lon=121.4062)).signals
    assert s.category_name == "井盖缺失"
    location = ingestor.knowledge.locate(s.lat, s.lon, None)[0]
    assert ingestor.knowledge.route(s.category_code, s.context, location).departments[0] == "物业公司"


def test_committee_group_rent_is_dispatched_at_once(ingestor: Ingestor) -> None:
    rec = report(reporter_kind="committee", reporter_id="jw-jiangnan", category="群租", address="斜土路1175弄")
    [s] = run(ingestor, topics.FIELD_REPORTS, rec).signals
    assert "committee" in s.context
    route = ingestor.knowledge.route(s.category_code, s.context)
    assert route.immediate and route.departments == ["房管办"]


def test_zero_report_gives_a_row_and_no_signal(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.FIELD_REPORTS, report(reporter_kind="station", zero_report=True, address="乐山新村"))
    assert not result.signals and not result.triage
    [row] = result.rows["zero_reports"]
    assert row == {"report_id": "R1", "reporter_id": "insp-007", "reporter_kind": "station",
                   "ts_ms": iso_to_ms("2026-11-20T10:00:00+08:00"), "community": "乐山新村", "street": "徐家汇街道"}


def test_field_track_gives_a_row(ingestor: Ingestor) -> None:
    result = run(ingestor, topics.FIELD_TRACKS, {"inspector_id": "insp-007", "ts": "2026-11-20T10:00:05+08:00",
                                                 "lat": 31.1975, "lon": 121.4585})
    assert not result.signals
    [row] = result.rows["inspector_tracks"]
    assert row["street"] == "斜土街道" and row["cell"] and row["ts_ms"] == iso_to_ms("2026-11-20T10:00:05+08:00")


# ---------------------------------------------------------------- iot.readings: heritage sensors
def reading(device: str, metric: str, value: float, ts: str = "2026-11-20T10:00:00+08:00") -> dict[str, Any]:
    return {"device_id": device, "ts": ts, "metric": metric, "value": value}


@pytest.mark.parametrize("device,metric,value,category,threshold", [
    ("HB-WK-V01", "vibration_mm_s", 3.1, "历史建筑振动超限", 2.5),   # 二类
    ("HB-SQL-V01", "vibration_mm_s", 1.6, "历史建筑振动超限", 1.5),  # 一类 is stricter
    ("HB-WK-T01", "tilt_permille", 3.2, "历史建筑倾斜超限", 3.0),
    ("HB-HS-V01", "tilt_permille", 3.6, "历史建筑倾斜超限", 3.5),   # the device's own override
])
def test_sensor_over_threshold(ingestor: Ingestor, device: str, metric: str, value: float, category: str,
                               threshold: float) -> None:
    result = run(ingestor, topics.IOT_READINGS, reading(device, metric, value))
    [s] = result.signals
    assert s.category_name == category and "heritage" in s.context and s.source_kind == "sensor"
    [alarm] = result.rows["sensor_alarms"]
    assert set(alarm) == {"alarm_id", "device_id", "building", "ts_ms", "metric", "value", "threshold", "street",
                          "category_code"}
    assert alarm["threshold"] == threshold and alarm["value"] == value and alarm["category_code"] == s.category_code
    assert s.extra_dict()["threshold"] == threshold
    assert ingestor.knowledge.route(s.category_code, s.context).departments == ["街道管理办", "房管办"]


def test_sensor_under_threshold_is_quiet(ingestor: Ingestor) -> None:
    assert run(ingestor, topics.IOT_READINGS, reading("HB-WK-V01", "vibration_mm_s", 2.5)) == IngestResult()
    assert run(ingestor, topics.IOT_READINGS, reading("HB-SQL-V01", "vibration_mm_s", 2.0)).signals  # 一类: 1.5


def test_unknown_device_and_metric_are_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="unknown device"):
        run(ingestor, topics.IOT_READINGS, reading("NOPE", "vibration_mm_s", 9))
    with pytest.raises(RejectRecord, match="humidity"):
        run(ingestor, topics.IOT_READINGS, reading("HB-WK-V01", "humidity", 9))


# ---------------------------------------------------------------- iot.readings: lift e-bikes
def test_lift_ebike_broadcast_at_once_and_case_on_the_nth_repeat(ingestor: Ingestor) -> None:
    limit = ingestor.knowledge.kb.ebike_repeat_per_day
    signals = []
    for i in range(limit + 1):
        ts = f"2026-11-20T{8 + i:02d}:00:00+08:00"
        result = run(ingestor, topics.IOT_READINGS, reading("LIFT-YGY-03-1", "ebike_detected", 1, ts))
        [cmd] = result.commands
        assert cmd.command == EBIKE_COMMAND and cmd.device_id == "LIFT-YGY-03-1" and cmd.reading_ts == ts
        assert cmd.ts_ms == iso_to_ms(ts)
        [alarm] = result.rows["sensor_alarms"]  # every detection shows on the sensor board
        assert (alarm["device_id"], alarm["metric"], alarm["ts_ms"]) == ("LIFT-YGY-03-1", "ebike_detected", cmd.ts_ms)
        signals += result.signals
        if i < limit - 1:
            assert not result.signals
    [s] = signals  # exactly one case per lift and day
    assert s.category_name == "电动车进电梯" and s.community == "怡桂苑"
    assert s.extra_dict()["count"] == limit
    assert ingestor.knowledge.route(s.category_code, s.context).departments == ["物业公司"]


def test_lift_counts_per_day_and_per_lift(ingestor: Ingestor) -> None:
    limit = ingestor.knowledge.kb.ebike_repeat_per_day
    for i in range(limit - 1):
        run(ingestor, topics.IOT_READINGS, reading("LIFT-JN-12-1", "ebike_detected", 1, f"2026-11-20T1{i}:00:00+08:00"))
        run(ingestor, topics.IOT_READINGS, reading("LIFT-LS-05-1", "ebike_detected", 1, f"2026-11-20T1{i}:00:00+08:00"))
    # the next detection is on another Shanghai day (00:30 local = 16:30 UTC the day before)
    result = run(ingestor, topics.IOT_READINGS,
                 reading("LIFT-JN-12-1", "ebike_detected", 1, "2026-11-20T16:30:00+00:00"))
    assert not result.signals
    assert ingestor.device_feed.lift_count("LIFT-JN-12-1", "2026-11-21") == 1


def test_lift_redelivery_is_not_counted_twice(ingestor: Ingestor) -> None:
    limit = ingestor.knowledge.kb.ebike_repeat_per_day
    for _ in range(limit + 2):
        result = run(ingestor, topics.IOT_READINGS, reading("LIFT-LS-05-1", "ebike_detected", 1))
        assert not result.signals
    assert ingestor.device_feed.lift_count("LIFT-LS-05-1", "2026-11-20") == 1


def test_lift_state_survives_a_restart(kb: Knowledge) -> None:
    """The worker's way: one processor per partition, its changed device states written to a changelog, a
    new owner restores them and goes on at the next offset."""
    first = Ingestor(kb).new_device_processor()
    limit = kb.kb.ebike_repeat_per_day
    out = IngestResult()
    for i in range(limit - 1):
        first.process(reading("LIFT-YGY-03-1", "ebike_detected", 1.0, f"2026-11-20T1{i}:00:00+08:00"), i, INGEST_MS,
                      out)
    saved = json.loads(json.dumps(first.take_dirty()))
    checkpoint = json.loads(json.dumps(first.checkpoint()))
    second = Ingestor(kb).new_device_processor()
    start = second.restore(checkpoint, saved)
    assert start == limit - 2   # the last reading's minute is still open: re-read from there
    for i in range(start, limit - 1):  # the open minute comes back from the partition, without new effects
        second.rebuild(reading("LIFT-YGY-03-1", "ebike_detected", 1.0, f"2026-11-20T1{i}:00:00+08:00"), i)
    result = IngestResult()
    second.process(reading("LIFT-YGY-03-1", "ebike_detected", 1.0, "2026-11-20T19:00:00+08:00"), limit - 1, INGEST_MS,
                   result)
    assert [s.category_name for s in result.signals] == ["电动车进电梯"]


def test_lift_no_detection_is_quiet(ingestor: Ingestor) -> None:
    assert run(ingestor, topics.IOT_READINGS, reading("LIFT-YGY-03-1", "ebike_detected", 0)) == IngestResult()


# ---------------------------------------------------------------- camera.alerts
def alert(camera: str, kind: str, confidence: float, count: int | None = None, alert_id: str = "A1") -> dict[str, Any]:
    return {"alert_id": alert_id, "camera_id": camera, "ts": "2026-11-20T12:00:00+08:00", "type": kind,
            "confidence": confidence, "count": count, "snapshot": "s3://cam/a1.jpg"}


def test_camera_alert_type_maps_to_category(ingestor: Ingestor) -> None:
    [s] = run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-004", "street_vending", 0.9)).signals
    assert s.category_name == "占道经营" and s.source == "camera" and s.photos == ["s3://cam/a1.jpg"]
    assert s.street == "虹梅街道"


def test_camera_below_its_type_threshold_goes_to_triage(ingestor: Ingestor) -> None:
    # 0.78 passes street_vending (0.75) but not illegal_parking (0.8)
    assert run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-004", "street_vending", 0.78)).signals
    result = run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-004", "illegal_parking", 0.78))
    [t] = result.triage
    assert "0.78 < 0.80" in t.reason and t.best_category == "E0504"


def test_unknown_camera_type_goes_to_triage(ingestor: Ingestor) -> None:
    [t] = run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-004", "ufo", 0.99)).triage
    assert "ufo" in t.reason


def test_unknown_camera_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="unknown camera"):
        run(ingestor, topics.CAMERA_ALERTS, alert("CAM-NOPE", "crowd", 0.9, 10))


@pytest.mark.parametrize("camera,count,level", [
    ("CAM-XH-001", 799, None), ("CAM-XH-001", 800, 3), ("CAM-XH-001", 1500, 2), ("CAM-XH-001", 3000, 1),
    ("CAM-XH-002", 300, 3), ("CAM-XH-002", 700, 2), ("CAM-XH-002", 1300, 1),
    ("CAM-XH-004", 149, None), ("CAM-XH-004", 150, 3), ("CAM-XH-004", 600, 1),   # default thresholds
])
def test_crowd_levels_per_area(ingestor: Ingestor, camera: str, count: int, level: int | None) -> None:
    result = run(ingestor, topics.CAMERA_ALERTS, alert(camera, "crowd", 0.9, count))
    [s] = result.signals   # below the attention level too: an open crowd case steps down with such counts
    if level is None:
        assert s.level_hint is None and s.extra_dict()["count"] == count
        return
    assert s.category_name == "人群聚集超限" and s.level_hint == level and s.extra_dict()["count"] == count
    assert ingestor.knowledge.route(s.category_code, s.context).departments == ["公安派出所"]


def test_crowd_without_count_is_rejected(ingestor: Ingestor) -> None:
    with pytest.raises(RejectRecord, match="count"):
        run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-001", "crowd", 0.9))


# ---------------------------------------------------------------- registry.changes
def change(address: str, kind: str = "housing_contract") -> dict[str, Any]:
    return {"change_id": "G1", "ts": "2026-11-20T14:00:00+08:00", "address": address, "kind": kind,
            "detail": "住房合同变更"}


@pytest.mark.parametrize("address", ["永嘉路389号", "淮海中路1850号", "衡山路100号"])
def test_registry_change_in_heritage_zone_warns_street_management(ingestor: Ingestor, address: str) -> None:
    [s] = run(ingestor, topics.REGISTRY_CHANGES, change(address)).signals
    assert s.category_name == "历史建筑擅自装修" and "heritage" in s.context and s.source == "registry"
    assert ingestor.knowledge.route(s.category_code, s.context).departments[0] == "街道管理办"


def test_registry_change_outside_the_zone_is_routine(ingestor: Ingestor) -> None:
    assert run(ingestor, topics.REGISTRY_CHANGES, change("钦江路15号", "business_scope")) == IngestResult()


def test_registry_change_at_unknown_address_goes_to_triage(ingestor: Ingestor) -> None:
    [t] = run(ingestor, topics.REGISTRY_CHANGES, change("南京东路1号")).triage
    assert "unknown location" in t.reason


def test_crowd_count_type_alias_uses_the_crowd_levels(ingestor: Ingestor) -> None:
    [s] = run(ingestor, topics.CAMERA_ALERTS, alert("CAM-XH-001", "crowd_count", 0.9, 900)).signals
    assert s.category_name == "人群聚集超限" and s.level_hint == 3


def test_sample_data_for_the_simulator_is_usable(ingestor: Ingestor) -> None:
    kb = ingestor.knowledge
    for place in kb.sample_places():
        loc, reason = kb.locate(None, None, place["address"])
        assert loc is not None, reason
        assert kb.locate(place["lat"], place["lon"], None)[0] is not None
    for address in kb.sample_heritage_addresses():
        [s] = run(ingestor, topics.REGISTRY_CHANGES, change(address)).signals
        assert s.category_name == "历史建筑擅自装修"
    for device in kb.sample_devices():
        value = device.get("threshold", 0) * 2 or 1
        result = run(ingestor, topics.IOT_READINGS, reading(device["device_id"], device["metric"], value))
        assert result.commands or result.signals
    assert set(kb.sample_cameras()) == {f"CAM-XH-{i:03d}" for i in range(1, 21)}


def test_structured_report_at_unknown_place_keeps_its_category_in_triage(ingestor: Ingestor) -> None:
    [t] = run(ingestor, topics.FIELD_REPORTS, report(category="群租", address="南京东路1号")).triage
    assert t.best_category == "E0601" and t.confidence == 1.0 and "unknown location" in t.reason
