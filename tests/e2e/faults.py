"""Shared pieces of the fault-injection suite (tests/e2e/test_faults_*.py): the poison-record
catalogue, a steady feeder of good records, and waiting for the pipeline to settle."""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaProducer

from streams.bus.codec import registry
from streams.bus.topics import TopicNames

CITY_STREETS = ["斜土路", "天平路", "漕溪北路", "肇嘉浜路", "虹梅路", "宜山路", "衡山路", "田林路", "钦江路",
                "龙华路", "零陵路", "东安路"]


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return iso(datetime.now(UTC) + delta)


def call(i: int, when: str | None = None, prefix: str = "G") -> dict[str, Any]:
    """A hotline call at a place of its own (no two merge): one signal, one case, one dispatch."""
    road = CITY_STREETS[i % len(CITY_STREETS)]
    number = 100 + (i // len(CITY_STREETS)) * 40
    return {"call_id": f"{prefix}-{i}", "line": "12345", "received_at": when or now_iso(), "caller": f"1380000{i:04d}",
            "text": f"{road}{number}号楼下饭店油烟直排，家里窗户都不敢开", "address": f"{road}{number}号"}


@dataclass
class Poison:
    """One poison record: where it goes, its bytes (None: a tombstone), and what its dead letter says."""

    name: str
    topic: str
    value: bytes | None
    reason: str                      # a substring of the dead letter's reason
    dead_topic: str | None = None    # the dead letter's logical topic (default: ``topic``)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def poison_catalogue(max_message_bytes: int) -> list[Poison]:
    """Every class of bad input the issue names, and a few more, on every consumer's topics."""
    codec = registry()
    good_call = call(0, prefix="P")
    reading = {"device_id": "HB-WK-V01", "ts": now_iso(), "metric": "vibration_mm_s", "value": 1.0}
    track = {"inspector_id": "INS-001", "ts": now_iso(), "lat": 31.19, "lon": 121.43}
    camera = {"alert_id": "CA-P", "camera_id": "CAM-XH-005", "ts": now_iso(), "type": "exposed_garbage",
              "confidence": 0.9, "count": None, "snapshot": None}
    avro_call = codec.encode("hotline_call", {**good_call, "lat": None, "lon": None, "channel": None})
    # a valid call whose signal is larger than the broker takes (3 bytes a character)
    huge_text = "楼下饭店油烟直排" * (max_message_bytes // 24 + 1)
    catalogue = [
        Poison("tombstone hotline", "hotline.calls", None, "tombstone"),
        Poison("tombstone iot", "iot.readings", None, "tombstone"),
        Poison("tombstone track", "field.tracks", None, "tombstone"),
        Poison("tombstone action", "case.actions", None, "tombstone"),
        Poison("tombstone case input", "case.inputs", None, "tombstone"),
        Poison("garbage bytes", "hotline.calls", b"\x00\xffnot a record", "not JSON"),
        Poison("garbage case input", "case.inputs", b"\x00\xffnot a record", "not JSON"),
        Poison("JSON array", "field.reports", b"[1, 2]", "must be an object"),
        Poison("lone surrogate", "hotline.calls",
               json.dumps({**call(1, prefix="P"), "text": "a\ud800b"}).encode("ascii"), "surrogate"),
        Poison("deep nesting", "hotline.calls", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", "depth"),
        Poison("number above 1e308", "iot.readings", _json(reading)[:-5] + b"1e309}", "infinity"),
        Poison("NaN literal", "iot.readings", _json(reading)[:-5] + b"NaN}", "not JSON"),
        Poison("NaN in Avro reading", "iot.readings", codec.encode("iot_reading", {**reading, "value": float("nan")}),
               "not a finite number"),
        Poison("NaN confidence in Avro", "camera.alerts",
               codec.encode("camera_alert", {**camera, "confidence": float("nan")}), "not a finite number"),
        Poison("1 MB address", "hotline.calls", _json({**call(2, prefix="P"), "address": "x" * 900_000}),
               "characters long"),
        Poison("lat 95 in Avro", "field.tracks", codec.encode("field_track", {**track, "lat": 95.0}),
               "'lat' out of range"),
        Poison("lon 500 in Avro", "field.tracks", codec.encode("field_track", {**track, "lon": 500.0}),
               "'lon' out of range"),
        Poison("line 99999 in Avro", "hotline.calls",
               codec.encode("hotline_call", {**good_call, "line": "99999", "lat": None, "lon": None, "channel": None}),
               "'line' must be \"12345\" or"),
        Poison("stamped 1970", "hotline.calls", _json(call(3, "1970-01-01T08:00:00+08:00", prefix="P")),
               "days before the record reached Kafka"),
        Poison("year 1", "hotline.calls", _json(call(4, "0001-01-01T00:00:00+08:00", prefix="P")), "received_at"),
        Poison("a day ahead", "hotline.calls", _json(call(5, now_iso(timedelta(days=1)), prefix="P")), "future"),
        Poison("unknown fingerprint", "hotline.calls", b"\xc3\x01" + b"\x99" * 8 + avro_call[10:],
               "unknown schema fingerprint"),
        Poison("truncated Avro", "hotline.calls", avro_call[:20], "corrupt Avro body"),
        Poison("trailing bytes", "hotline.calls", avro_call + b"\x00", "trailing bytes"),
        Poison("wrong schema", "hotline.calls", codec.encode("iot_reading", reading), "hotline_call was expected"),
        Poison("missing field", "hotline.calls", _json({"call_id": "P-6", "line": "12345"}), "missing required field"),
        Poison("bad registry kind", "registry.changes",
               _json({"change_id": "R-P", "ts": now_iso(), "address": "武康路100号", "kind": "demolition"}), "'kind'"),
        Poison("bad actor kind", "case.actions",
               _json({"action_id": "A-P", "ts": now_iso(), "source_id": "G-0", "actor_kind": "hacker",
                      "actor_id": "x", "action": "close"}), "actor_kind"),
        Poison("report without text or category", "field.reports",
               _json({"report_id": "F-P", "reporter_id": "INS-001", "reporter_kind": "inspector",
                      "reported_at": now_iso()}), "neither 'category' nor 'text'"),
        Poison("unknown device", "iot.readings", _json({**reading, "device_id": "NO-SUCH"}), "unknown device"),
        Poison("unknown camera", "camera.alerts", _json({**camera, "camera_id": "CAM-NONE"}), "unknown camera"),
        Poison("derived record too large", "hotline.calls", _json({**call(7, prefix="P"), "text": huge_text[:9_999]}),
               "message limit"),
    ]
    return catalogue


@dataclass
class Produced:
    """Where each produced record landed: (logical topic, partition, offset)."""

    positions: list[tuple[str, int, int]] = field(default_factory=list)


def produce_records(bootstrap: str, prefix: str, records: list[tuple[str, bytes | None]],
                    key: Callable[[int], bytes | None] = lambda i: f"k{i}".encode()) -> list[tuple[str, int, int]]:
    """Produce in order (keyed: a tombstone needs a key); returns each record's (logical topic, partition, offset)."""
    names = TopicNames(prefix)
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000, acks="all")
    try:
        futures = [producer.send(names.name(topic), value, key=key(i)) for i, (topic, value) in enumerate(records)]
        producer.flush()
        return [(topic, f.get(30).partition, f.get(30).offset) for (topic, _), f in zip(records, futures, strict=True)]
    finally:
        producer.close()


class Feeder:
    """Produces good records at a steady rate in a thread until stopped; survives a broker outage
    (records the broker did not acknowledge are sent again, so every counted record is in Kafka)."""

    def __init__(self, bootstrap: str, prefix: str, make: Callable[[int], tuple[str, dict[str, Any]]],
                 rate: float = 20.0) -> None:
        self.bootstrap, self.names, self.make, self.rate = bootstrap, TopicNames(prefix), make, rate
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[str, dict[str, Any]]]:
        self._stop.set()
        self._thread.join(120)
        return self.sent

    def _run(self) -> None:
        counter = itertools.count()
        i = next(counter)
        producer: KafkaProducer | None = None
        while not self._stop.is_set():
            try:
                if producer is None:
                    producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=5000,
                                             max_block_ms=5000, linger_ms=5)
                topic, value = self.make(i)
                producer.send(self.names.name(topic), _json(value)).get(10)
                self.sent.append((topic, value))
                i = next(counter)
                time.sleep(1 / self.rate)
            except Exception:  # broker away: try the same record again on a fresh producer
                if producer is not None:
                    try:
                        producer.close(timeout=0)
                    except Exception:
                        pass
                    producer = None
                time.sleep(0.5)
        if producer is not None:
            producer.close(timeout=5)
