"""Simulated city feeds: realistic Chinese hotline calls, inspector and station reports, GPS tracks,
heritage-building sensors, lift e-bike detection, camera alerts and registry changes.

Deterministic with a seed; produced through kafka-python at a configured rate.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.bus import clients
from streams.core.times import CITY_TZ
from streams.settings import Settings

# What residents say, by category: colloquial, with the place woven in ({place}).
HOTLINE_TEMPLATES: dict[str, list[str]] = {
    "群租": ["{place}有一套房子住了十几个人，隔成好多小间，疑似群租，请管一管",
             "我们楼{place}那户群租，天天人进人出，晚上很吵，安全隐患大",
             "反映{place}群租问题，房东把客厅也隔出来租了"],
    "违法搭建": ["{place}有人在屋顶私自搭建阳光房，属于违章建筑", "{place}一楼住户在院子里违法搭建了一个棚子"],
    "私装地锁": ["小区{place}停车位上有人私装地锁，老人走路被绊倒了", "{place}车位被装了地锁，别人都停不了车"],
    "损坏房屋承重结构": ["{place}楼上装修在砸承重墙，整栋楼都在震，太危险了",
                     "{place}有户人家装修把承重墙拆了，请赶紧来制止"],
    "暴露垃圾": ["{place}路边堆了好多垃圾没人清运，臭气熏天", "{place}垃圾桶满了溢出来，苍蝇很多"],
    "跨门经营": ["{place}沿街的水果店把货架摆到人行道上了，跨门经营", "{place}小饭店把桌子摆到门外人行道上"],
    "占道经营": ["{place}有流动摊贩占道卖菜，人行道走不过去", "{place}路口好几个摊位占道经营，堵得很"],
    "无照经营": ["{place}有个没有营业执照的小作坊在营业", "{place}一家店无照经营卖熟食，卫生很差"],
    "非法小广告": ["{place}电线杆和墙上贴满了小广告", "{place}楼道里到处是办证小广告，刷都刷不掉"],
    "噪声扰民": ["{place}小区里广场舞音响开得太大声，晚上十点还在跳", "{place}沿街的KTV每天半夜很吵，影响休息",
             "{place}楼下摊贩用喇叭叫卖，噪音很大"],
    "餐饮油烟": ["{place}楼下饭店油烟直排，家里窗户都不敢开", "{place}烧烤店油烟很大，呛得人受不了"],
    "施工扰民": ["{place}工地晚上十一点还在施工，吵得睡不着", "{place}夜间施工打桩，噪音太大"],
    "工地扬尘": ["{place}工地扬尘很严重，没有覆盖防尘网", "{place}拆房子灰尘漫天，没有洒水"],
    "道路积水": ["{place}下雨后路面积水很深，车子过不去", "{place}马路积水好几天了，排水不畅"],
    "电动车进电梯": ["{place}有人把电动车推进电梯上楼充电", "{place}电梯里天天有人带电瓶车"],
    "飞线充电": ["{place}有人从楼上拉电线下来给电动车充电，飞线充电很危险", "{place}楼道里飞线给电瓶车充电"],
    "人身安全险情": ["{place}有人被困在电梯里，情况紧急", "{place}老房子外墙有东西掉下来，差点砸到人"],
    "机动车乱停放": ["{place}汽车乱停在消防通道上", "{place}路边车子乱停，把人行道都占了"],
    "非机动车乱停放": ["{place}共享单车乱停一大片，人都走不过去", "{place}门口电瓶车乱停乱放"],
    "违规户外广告": ["{place}店招广告牌快掉下来了，很危险", "{place}新装的户外广告牌没有审批"],
    "井盖缺失": ["{place}人行道上的井盖不见了，很危险", "{place}窨井盖丢了，晚上看不见"],
    "井盖破损": ["{place}井盖破了一个洞，踩上去晃动", "{place}路面井盖松动破损，车压过去哐哐响"],
    "路灯损坏": ["{place}路灯坏了好几天，晚上黑漆漆的", "{place}一排路灯都不亮了"],
    "道路破损": ["{place}路面坑坑洼洼，好几个大坑", "{place}人行道砖头翘起来了，容易绊倒"],
    "绿化损坏": ["{place}绿化带的树被人砍了", "{place}草坪被车压坏了"],
    "消防设施损坏": ["{place}楼道里的灭火器过期了，消火栓也坏了", "{place}消防栓漏水，没人修"],
}

FIELD_CATEGORIES = ["暴露垃圾", "跨门经营", "占道经营", "非法小广告", "非机动车乱停放", "井盖破损", "道路破损",
                    "违法搭建", "群租", "私装地锁"]
CAMERA_TYPES = ["street_vending", "exposed_garbage", "crowd_count", "illegal_parking"]


@dataclass
class Place:
    address: str
    lat: float
    lon: float


def places_from_knowledge(knowledge: Any) -> list[Place]:
    """Addresses the sample city's gazetteer can locate, so simulated calls land on real grid cells."""
    return [Place(p["address"], p["lat"], p["lon"]) for p in knowledge.sample_places()]


class CityFeeds:
    """Generates raw records for every feed. ``now`` is the event time of the next record."""

    def __init__(self, seed: int, places: list[Place], devices: list[dict[str, Any]] | None = None,
                 cameras: list[str] | None = None, heritage_addresses: list[str] | None = None,
                 patrols: dict[str, list[tuple[float, float]]] | None = None,
                 stations: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.places = places
        self.devices = devices or []
        self.cameras = cameras or [f"CAM-XH-{i:03d}" for i in range(1, 21)]
        self.heritage_addresses = heritage_addresses or [p.address for p in places[:5]]
        # inspector id -> the unit-cell centres of its responsibility grid 责任网格 (field.yaml): inspectors walk
        # their grid at a walking pace; without field data, a few inspectors walk around the gazetteer's places
        self.patrols = patrols or {f"INS-{i:03d}": [(p.lat, p.lon) for p in places] for i in range(1, 6)}
        self.stations = stations or [f"STA-{i:03d}" for i in range(1, 14)]
        self.walkers: dict[str, tuple[datetime, float, float, float, float]] = {}  # id -> (t, lat, lon, to)
        self.seq = 0

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"

    def _ts(self, now: datetime) -> str:
        return now.astimezone(CITY_TZ).isoformat(timespec="seconds")

    def hotline(self, now: datetime) -> dict[str, Any]:
        category = self.rng.choice(list(HOTLINE_TEMPLATES))
        place = self.rng.choice(self.places)
        text = self.rng.choice(HOTLINE_TEMPLATES[category]).format(place=place.address)
        record: dict[str, Any] = {
            "call_id": self._id("CALL"), "line": self.rng.choice(["12345", "12345", "12345", "12319"]),
            "received_at": self._ts(now), "caller": f"13{self.rng.randrange(10**9):09d}", "text": text,
        }
        if self.rng.random() < 0.6:
            record["address"] = place.address
        if self.rng.random() < 0.3:
            record["lat"], record["lon"] = place.lat, place.lon
        return record

    def field_report(self, now: datetime) -> dict[str, Any]:
        place = self.rng.choice(self.places)
        kind = self.rng.choice(["inspector", "inspector", "station", "committee"])
        category = self.rng.choice(FIELD_CATEGORIES)
        on_spot = kind == "inspector" and self.rng.random() < 0.4
        reporter = (self.rng.choice(sorted(self.patrols)) if kind == "inspector" else
                    self.rng.choice(self.stations) if kind == "station" else f"COM-{self.rng.randrange(1, 14):03d}")
        if kind == "station" and self.rng.random() < 0.5:   # 无事报平安: the station looked and found nothing
            return {"report_id": self._id("RPT"), "reporter_id": reporter, "reporter_kind": kind,
                    "reported_at": self._ts(now), "zero_report": True}
        report: dict[str, Any] = {
            "report_id": self._id("RPT"), "reporter_id": reporter,
            "reporter_kind": kind, "reported_at": self._ts(now), "category": category,
            "text": self.rng.choice(HOTLINE_TEMPLATES[category]).format(place=place.address),
            "address": place.address, "lat": place.lat, "lon": place.lon,
            "photos": [f"s3://citygrid/photos/{self.seq}-before.jpg"],
        }
        if on_spot:
            report["handled_on_spot"] = True
            report["after_photos"] = [f"s3://citygrid/photos/{self.seq}-after.jpg"]
        return report

    def track(self, now: datetime) -> dict[str, Any] | None:
        """A fix of an inspector walking (~1.3 m/s) from cell to cell of its grid, with a few metres of GPS noise;
        a handset sends one every 10 s or so (None: the one picked sent its last too recently)."""
        inspector = self.rng.choice(sorted(self.patrols))
        cells = self.patrols[inspector]
        if inspector in self.walkers and (now - self.walkers[inspector][0]).total_seconds() < 10:
            return None
        if inspector not in self.walkers:
            lat, lon = self.rng.choice(cells)
            to_lat, to_lon = self.rng.choice(cells)
            self.walkers[inspector] = (now, lat, lon, to_lat, to_lon)
        last, lat, lon, to_lat, to_lon = self.walkers[inspector]
        step = min(120.0, (now - last).total_seconds()) * 1.3 / 111_320   # degrees walked since the last fix
        d_lat, d_lon = to_lat - lat, to_lon - lon
        remaining = (d_lat ** 2 + d_lon ** 2) ** 0.5
        if remaining <= step:
            lat, lon = to_lat, to_lon
            to_lat, to_lon = self.rng.choice(cells)
        elif remaining > 0:
            lat, lon = lat + d_lat * step / remaining, lon + d_lon * step / remaining
        self.walkers[inspector] = (now, lat, lon, to_lat, to_lon)
        noise = 5 / 111_320
        return {"inspector_id": inspector, "ts": self._ts(now), "lat": round(lat + self.rng.uniform(-noise, noise), 6),
                "lon": round(lon + self.rng.uniform(-noise, noise), 6)}

    def iot(self, now: datetime) -> dict[str, Any] | None:
        if not self.devices:
            return None
        device = self.rng.choice(self.devices)
        metric = device["metric"]
        if metric == "ebike_detected":
            value = 1.0 if self.rng.random() < 0.2 else 0.0
        else:
            limit = float(device.get("threshold", 1.0))
            value = round(limit * (1.5 if self.rng.random() < 0.03 else self.rng.uniform(0.05, 0.6)), 3)
        return {"device_id": device["device_id"], "ts": self._ts(now), "metric": metric, "value": value}

    def camera(self, now: datetime) -> dict[str, Any]:
        kind = self.rng.choice(CAMERA_TYPES)
        alert: dict[str, Any] = {"alert_id": self._id("CAMA"), "camera_id": self.rng.choice(self.cameras),
                                 "ts": self._ts(now), "type": kind, "confidence": round(self.rng.uniform(0.5, 0.99), 2)}
        if kind == "crowd_count":
            alert["count"] = self.rng.choice([30, 80, 150, 400, 900])
        return alert

    def registry_change(self, now: datetime) -> dict[str, Any]:
        return {"change_id": self._id("REG"), "ts": self._ts(now), "address": self.rng.choice(self.heritage_addresses),
                "kind": self.rng.choice(["housing_contract", "business_scope"]), "detail": "申报变更"}

    # feed mix: (topic, weight, generator)
    def stream(self, start: datetime, rate: float, sources: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        mix = [
            ("hotline.calls", 5, self.hotline, "hotline"),
            ("field.reports", 3, self.field_report, "field"),
            ("field.tracks", 6, self.track, "field"),
            ("iot.readings", 8, self.iot, "iot"),
            ("camera.alerts", 2, self.camera, "camera"),
            ("registry.changes", 0.3, self.registry_change, "registry"),
        ]
        mix = [m for m in mix if m[3] in sources]
        weights = [m[1] for m in mix]
        step = timedelta(seconds=1.0 / rate)
        now = start
        while True:
            topic, _, make, _ = self.rng.choices(mix, weights)[0]
            record = make(now)
            if record is not None:
                yield topic, record
            now += step


class DepartmentActors:
    """Plays the departments and verifiers so the loop closes in a demo: reads case states from the
    ``cases`` topic, reports 处置 done (handled) a little later, then the closer verifies (sometimes
    fails it: rework 返工) and closes 结案 — the originating station/committee for its own cases
    (谁发单、谁验收、谁结案), the centre otherwise."""

    def __init__(self, settings: Settings, names: Any, producer: Any, seed: int, reporters: dict[str, str],
                 delay: tuple[float, float] = (5.0, 25.0)) -> None:
        import threading

        self.settings, self.names, self.producer = settings, names, producer
        self.rng = random.Random(seed ^ 0x5EED)
        self.reporters = reporters  # report id -> reporter id, of the reports this simulator filed
        self.delay = delay
        self.scheduled: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="department-actors", daemon=True)
        self.actions = 0

    def start(self) -> DepartmentActors:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _action(self, case: dict[str, Any], action: str, actor_kind: str, actor_id: str, note: str = "") -> None:
        self.actions += 1
        record = {"action_id": f"SIM-{case['case_id']}-{action}-{self.actions}", "ts": datetime.now(CITY_TZ).isoformat(
            timespec="seconds"), "case_id": case["case_id"], "actor_kind": actor_kind, "actor_id": actor_id,
            "action": action, "note": note or None}
        # keyed by case: one partition keeps a case's actions in order (verify_pass before close)
        self.producer.send(self.names.name("case.actions"), record, key=case["case_id"].encode())

    def _closer(self, case: dict[str, Any]) -> tuple[str, str]:
        if case.get("origin") in ("station", "committee"):
            for source in case.get("sources") or []:
                kind, _, source_id = source.partition(":")
                if kind == case["origin"] and source_id in self.reporters:
                    return kind, self.reporters[source_id]
        return "center", "区网格中心"

    def _due(self, case: dict[str, Any], now: float) -> None:
        status = case["status"]
        key = (case["case_id"], f"{status}:{case.get('rework_count', 0)}")
        if status not in ("handle", "verify") or not case.get("departments"):
            return
        when = self.scheduled.setdefault(key, now + self.rng.uniform(*self.delay))
        if when > now or when < 0:
            return
        self.scheduled[key] = -1.0  # done
        if status == "handle":
            self._action(case, "handled", "department", case["departments"][0], "已处置")
            return
        kind, actor = self._closer(case)
        if self.rng.random() < 0.1 and not case.get("rework_count"):
            self._action(case, "verify_fail", kind, actor, "复查未整改到位")
            return
        self._action(case, "verify_pass", kind, actor, "核查通过")
        self._action(case, "close", kind, actor, "同意结案")

    def _run(self) -> None:
        from kafka import KafkaConsumer

        from streams.bus.codec import registry

        codec = registry()
        consumer = KafkaConsumer(self.names.name("cases"), **clients.simulator_cases_consumer(self.settings))
        latest: dict[str, dict[str, Any]] = {}
        try:
            while not self.stop.is_set():
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        state = json.loads(codec.decode(message.value)[1]["state"])
                        latest[state["case_id"]] = state
                now = time.monotonic()
                for case_id, case in list(latest.items()):
                    self._due(case, now)
                    if case["status"] in ("closed", "void"):
                        latest.pop(case_id, None)
        finally:
            consumer.close()


def patrols_of(knowledge: Any) -> dict[str, list[tuple[float, float]]] | None:
    """Inspector id -> the centres of its grid's unit cells (None: the city has no field.yaml)."""
    import h3

    field = knowledge.field
    out = {inspector: [tuple(h3.cell_to_latlng(c)) for c in sorted(field.grids[grid].cells)]
           for inspector, grid in field.inspectors.items()}
    return out or None


# The field that keys each feed's Kafka messages (the same choice as the gateway's).
KEY_FIELDS = {"hotline.calls": "call_id", "field.reports": "report_id", "field.tracks": "inspector_id",
              "iot.readings": "device_id", "camera.alerts": "alert_id", "registry.changes": "change_id"}


def record_key(topic: str, record: dict[str, Any]) -> bytes | None:
    value = record.get(KEY_FIELDS.get(topic, ""))
    return str(value).encode("utf-8") if value is not None else None


def run(settings: Settings, rate: float, duration: float | None, seed: int, sources: set[str], knowledge: Any,
        count: int | None = None, act: bool = False) -> int:
    """Produce simulated feeds at ``rate`` records/s for ``duration`` s (or ``count`` records). Returns the count."""
    from kafka import KafkaProducer

    from streams.bus.topics import TopicNames

    names = TopicNames(settings.topic_prefix)
    feeds = CityFeeds(seed, places_from_knowledge(knowledge), devices=knowledge.sample_devices(),
                      heritage_addresses=knowledge.sample_heritage_addresses(), patrols=patrols_of(knowledge),
                      stations=sorted(knowledge.field.stations) or None)
    producer = KafkaProducer(**clients.simulator_producer(settings),
                             value_serializer=lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8"))
    sent = 0
    started = time.monotonic()
    reporters: dict[str, str] = {}
    actors = DepartmentActors(settings, names, producer, seed, reporters).start() if act else None
    try:
        for topic, record in feeds.stream(datetime.now(UTC), rate, sources):
            if count is not None and sent >= count:
                break
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            ahead = sent / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
            # keyed like the gateway does: a device's readings and an inspector's fixes stay on one partition
            # (their keyed state lives with it), a record sent twice lands where the first one did
            producer.send(names.name(topic), record, key=record_key(topic, record))
            if topic == "field.reports":
                reporters[record["report_id"]] = record["reporter_id"]
            sent += 1
    except KeyboardInterrupt:
        pass
    finally:
        if actors is not None:
            actors.close()
        producer.flush()
        producer.close()
    return sent
