"""The per-record city feeds of the sample city (one place list, templated Chinese calls and reports): what
the monthly history generator (streams.sources.history) draws from. The live simulator plays the richer
district-wide day of streams.sources.scenario."""
from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.core.times import CITY_TZ

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
                 cameras: list[str] | None = None, heritage_addresses: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.places = places
        self.devices = devices or []
        self.cameras = cameras or [f"CAM-XH-{i:03d}" for i in range(1, 21)]
        self.heritage_addresses = heritage_addresses or [p.address for p in places[:5]]
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
        report: dict[str, Any] = {
            "report_id": self._id("RPT"), "reporter_id": f"{kind[:3].upper()}-{self.rng.randrange(1, 60):03d}",
            "reporter_kind": kind, "reported_at": self._ts(now), "category": category,
            "text": self.rng.choice(HOTLINE_TEMPLATES[category]).format(place=place.address),
            "address": place.address, "lat": place.lat, "lon": place.lon,
            "photos": [f"s3://citygrid/photos/{self.seq}-before.jpg"],
        }
        if on_spot:
            report["handled_on_spot"] = True
            report["after_photos"] = [f"s3://citygrid/photos/{self.seq}-after.jpg"]
        return report

    def track(self, now: datetime) -> dict[str, Any]:
        place = self.rng.choice(self.places)
        return {"inspector_id": f"INS-{self.rng.randrange(1, 60):03d}", "ts": self._ts(now),
                "lat": place.lat + self.rng.uniform(-0.001, 0.001), "lon": place.lon + self.rng.uniform(-0.001, 0.001)}

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


