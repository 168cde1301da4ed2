"""A city day of feeds over the whole sample district: what ``streams simulate`` and the bench produce.

- **Places**: every road of the city data yields door numbers (号) and lanes (弄) along its length, plus the
  gazetteer's own addresses: thousands of addresses over all 13 streets, each with the point the locator
  puts it at. Coordinates sent with a record carry a few metres of GPS noise.
- **Popularity**: a few places are hot spots (a heavy-tailed weight per place), most get a report now and
  then, so most reports open a new case and some places collect many.
- **Diurnal pattern**: each feed has an hourly profile (calls peak mid-morning and afternoon and almost stop
  at night; inspectors patrol in working hours; sensors report all day).
- **Bursts**: a storm (暴雨) brings 道路积水 calls and camera water-logging alerts at a few low spots;
  an event brings crowd-count alerts from the cameras of one area.
- **One problem, several sources**: a call may be followed by an inspector's report or another resident's
  call on the same problem and place, a camera alert by a passer-by's call.
- **Malformed records**: a configurable share fails its schema (a missing or mistyped field, a broken
  timestamp, bytes that are not JSON), as real feeds do.

Everything is deterministic for a seed. :meth:`CityScenario.timeline` yields records in event-time order
from a start instant (a recorded day for the bench and tests); :meth:`CityScenario.next_at` gives the next
record for a live clock (``streams simulate``), the feed chosen by the same hourly rates.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import h3

from streams.core.times import CITY_TZ
from streams.sources.feeds import FIELD_CATEGORIES, HOTLINE_TEMPLATES  # what residents say: one list

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# How often residents call about each (the rest weigh 1): noise, rubbish and parking dominate a hotline.
HOTLINE_WEIGHTS: dict[str, float] = {"噪声扰民": 4, "暴露垃圾": 3, "机动车乱停放": 3, "非机动车乱停放": 2.5,
                                     "餐饮油烟": 2, "群租": 1.5, "占道经营": 2, "道路积水": 0.5,
                                     "损坏房屋承重结构": 0.3, "人身安全险情": 0.3}
# Camera alert types and what a passer-by would call the same problem.
CAMERA_TYPES: dict[str, str] = {"street_vending": "占道经营", "exposed_garbage": "暴露垃圾",
                                "illegal_parking": "机动车乱停放", "nonmotor_parking": "非机动车乱停放"}

# Hourly profiles (local hour 0-23), relative: scaled so that a day keeps the configured volume.
PEOPLE = (0.15, 0.1, 0.07, 0.05, 0.05, 0.1, 0.3, 0.7, 1.3, 1.6, 1.6, 1.4, 1.1, 1.3, 1.5, 1.5, 1.4, 1.3, 1.2,
          1.2, 1.1, 0.9, 0.6, 0.3)
WORKING = (0, 0, 0, 0, 0, 0, 0.1, 0.6, 1.8, 2.2, 2.2, 1.6, 0.8, 1.8, 2.2, 2.2, 2.0, 1.2, 0.3, 0.1, 0, 0, 0, 0)
STREET_LIFE = (0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.3, 1.2, 1.2, 1.4, 1.5, 1.3, 1.2, 1.2, 1.3, 1.5, 1.8,
               2.0, 1.9, 1.5, 1.0, 0.6)
FLAT = (1.0,) * 24


def _normalised(profile: Sequence[float]) -> tuple[float, ...]:
    mean = sum(profile) / len(profile)
    return tuple(v / mean for v in profile)


@dataclass(frozen=True)
class SimPlace:
    """An address the locator resolves, at the point it resolves it to; or, away from the roads the city data
    knows, a point (``address`` empty) that records locate by their coordinates, described by ``label``."""

    address: str
    lat: float
    lon: float
    street_code: str
    label: str = ""

    @property
    def described(self) -> str:
        """How a caller names the place."""
        return self.address or self.label


class CityLike(Protocol):
    """What the place generator reads of streams.core.knowledge.geo.City."""

    roads: Any
    addresses: Any
    streets: Any
    cell_street: dict[str, str]

    def cell_of(self, lat: float, lon: float) -> str: ...


def district_places(city: CityLike, door_step: int = 6, lane_every: int = 4,
                    points_per_cell: int = 3) -> list[SimPlace]:
    """Door numbers every ``door_step`` along every road (each ``lane_every``-th one a lane 弄), the gazetteer
    addresses, and ``points_per_cell`` points in every grid cell no address falls in (the lanes and compounds
    the city data does not name); only places inside the district's grid. The same city gives the same list."""
    import h3  # the grid's own library (streams.core.knowledge.geo cells are H3)

    places: dict[str, SimPlace] = {}
    for entry in city.addresses.values():
        street = city.cell_street.get(city.cell_of(*entry.at))
        if street is not None:
            code = city.streets[street].code
            if getattr(entry, "community", None):
                code = city.streets[city.communities[entry.community].street].code  # type: ignore[attr-defined]
            places[entry.address] = SimPlace(entry.address, entry.at[0], entry.at[1], code)
    for road in city.roads.values():
        low, high = road.numbers
        for index, number in enumerate(range(low | 1, high + 1, door_step)):
            address = f"{road.name}{number}{'弄' if index % lane_every == lane_every - 1 else '号'}"
            if address in places or address.replace("弄", "号") in city.addresses:
                continue
            lat, lon = road.point(number)
            street = city.cell_street.get(city.cell_of(lat, lon))
            if street is not None:
                places[address] = SimPlace(address, lat, lon, city.streets[street].code)
    addressed = [places[k] for k in sorted(places)]
    covered = {city.cell_of(p.lat, p.lon) for p in addressed}
    points = []
    for cell in sorted(set(city.cell_street) - covered):
        street = city.streets[city.cell_street[cell]]
        lat, lon = h3.cell_to_latlng(cell)
        for i in range(points_per_cell):
            # spread over the cell (a res-9 cell is ~350 m across), deterministically
            angle, radius = 2.4 * i, 0.0006 * (i > 0)
            point = (round(lat + radius * math.sin(angle), 6), round(lon + radius * math.cos(angle), 6))
            if city.cell_street.get(city.cell_of(*point)) is None:
                continue
            points.append(SimPlace("", point[0], point[1], street.code, label=f"{street.name}这边一个小区"))
    return addressed + points


@dataclass(frozen=True)
class Burst:
    """Extra records for a while each day: ``feed`` at ``per_hour`` from local ``start_hour`` for ``hours``."""

    feed: str               # storm_calls | storm_cameras | crowd_cameras
    start_hour: float
    hours: float
    per_hour: float

    def active(self, local_hour: float) -> bool:
        return self.start_hour <= local_hour < self.start_hour + self.hours


DEFAULT_BURSTS = (
    Burst("storm_calls", 16.0, 2.0, 900.0),      # 暴雨: 道路积水 calls at a few low spots
    Burst("storm_cameras", 16.0, 2.0, 120.0),
    Burst("crowd_cameras", 19.0, 3.0, 240.0),    # an evening event: crowd counts in one area
)


@dataclass(frozen=True)
class ScenarioConfig:
    """Records per city day by feed (before the hourly profile), bursts, and the mixing shares."""

    hotline_per_day: float = 30_000
    field_per_day: float = 12_000
    camera_per_day: float = 6_000
    registry_per_day: float = 600
    tracks_per_day: float = 30_000
    iot_per_day: float = 40_000
    bursts: tuple[Burst, ...] = DEFAULT_BURSTS
    follow_up_share: float = 0.15     # a call or camera alert reported again by another source
    malformed_share: float = 0.005    # records that fail their schema
    hot_spot_alpha: float = 2.5       # Pareto shape of place popularity (smaller: hotter hot spots)
    gps_noise_m: float = 15.0


@dataclass(order=True)
class SimRecord:
    ts_ms: int
    seq: int
    topic: str = field(compare=False)
    value: dict[str, Any] | bytes = field(compare=False)   # a raw record (sent as JSON) or raw bytes
    malformed: bool = field(default=False, compare=False)
    kind: str = field(default="", compare=False)            # what made it: feed, burst or follow_up

    def payload(self) -> bytes:
        if isinstance(self.value, bytes):
            return self.value
        return json.dumps(self.value, ensure_ascii=False).encode("utf-8")


# feed -> (topic, source filter name, hourly profile)
FEEDS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "hotline": ("hotline.calls", "hotline", _normalised(PEOPLE)),
    "field": ("field.reports", "field", _normalised(WORKING)),
    "tracks": ("field.tracks", "field", _normalised(WORKING)),
    "iot": ("iot.readings", "iot", FLAT),
    "camera": ("camera.alerts", "camera", _normalised(STREET_LIFE)),
    "registry": ("registry.changes", "registry", _normalised(WORKING)),
    "storm_calls": ("hotline.calls", "hotline", FLAT),
    "storm_cameras": ("camera.alerts", "camera", FLAT),
    "crowd_cameras": ("camera.alerts", "camera", FLAT),
}
SOURCES = ("hotline", "field", "iot", "camera", "registry")


def local_hour(ts_ms: int) -> float:
    local = datetime.fromtimestamp(ts_ms / 1000, CITY_TZ)
    return local.hour + local.minute / 60 + local.second / 3600


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, CITY_TZ).isoformat(timespec="seconds")


class CityScenario:
    def __init__(self, seed: int, places: Sequence[SimPlace], devices: Sequence[dict[str, Any]] = (),
                 cameras: Sequence[dict[str, Any]] = (), heritage_addresses: Sequence[str] = (),
                 config: ScenarioConfig | None = None, sources: Sequence[str] = SOURCES,
                 patrols: dict[str, list[tuple[float, float]]] | None = None,
                 stations: Sequence[str] = ()) -> None:
        if not places:
            raise ValueError("a scenario needs places")
        self.config = config or ScenarioConfig()
        self.rng = random.Random(seed)
        self.places = list(places)
        weights = [self.rng.paretovariate(self.config.hot_spot_alpha) for _ in self.places]
        self._cumulative = list(itertools.accumulate(weights))
        self.devices = list(devices)
        self.cameras = [c for c in cameras if c.get("id")] or [{"id": f"CAM-XH-{i:03d}"} for i in range(1, 21)]
        areas = sorted({c["area"] for c in self.cameras if c.get("area")})
        self.crowd_area = areas[0] if areas else None
        self.heritage_addresses = list(heritage_addresses) or [p.address for p in self.places[:5] if p.address]
        # low spots the storm floods: a dozen addressed places, fixed for the seed
        addressed = [p for p in self.places if p.address] or self.places
        self.low_spots = self.rng.sample(addressed, min(12, len(addressed)))
        self.inspectors = [f"INS-{i:03d}" for i in range(1, 121)]
        # with the city's field data (field.yaml): its inspectors walk their responsibility grids 责任网格 (cell
        # centres) at a walking pace, and its residential stations report items or 无事报平安 daily
        self.patrols = patrols or {}
        if self.patrols:
            self.inspectors = sorted(self.patrols)
        self.stations = list(stations)
        self.walkers: dict[str, tuple[int, float, float, float, float]] = {}   # id -> (ms, lat, lon, to lat, lon)
        self.sources = set(sources)
        self.daily = {"hotline": self.config.hotline_per_day, "field": self.config.field_per_day,
                      "tracks": self.config.tracks_per_day, "iot": self.config.iot_per_day if self.devices else 0.0,
                      "camera": self.config.camera_per_day, "registry": self.config.registry_per_day}
        self._pending: list[SimRecord] = []   # follow-ups, by time
        self._seq = itertools.count()

    # ------------------------------------------------------------ rates
    def rates(self, ts_ms: int) -> dict[str, float]:
        """Records per millisecond by feed at this instant (profiles and bursts applied)."""
        hour = local_hour(ts_ms)
        out: dict[str, float] = {}
        for feed, per_day in self.daily.items():
            topic, source, profile = FEEDS[feed]
            if source in self.sources and per_day > 0:
                out[feed] = per_day / DAY_MS * profile[int(hour)]
        for burst in self.config.bursts:
            if burst.active(hour) and FEEDS[burst.feed][1] in self.sources:
                out[burst.feed] = out.get(burst.feed, 0.0) + burst.per_hour / HOUR_MS
        return out

    # ------------------------------------------------------------ the two clocks
    def timeline(self, start_ms: int, count: int | None = None, until_ms: int | None = None) -> Iterator[SimRecord]:
        """Records in event-time order from ``start_ms`` (a Poisson process at :meth:`rates`)."""
        ts = float(start_ms)
        made = 0
        while count is None or made < count:
            rates = self.rates(int(ts))
            total = sum(rates.values())
            ts += self.rng.expovariate(total) if total > 0 else HOUR_MS / 4
            if self._pending and self._pending[0].ts_ms <= ts:
                record = heapq.heappop(self._pending)
                ts = min(ts, float(record.ts_ms))
            elif total > 0:
                record = self._make(self._choose(rates, total), int(ts))
            else:
                continue
            if until_ms is not None and record.ts_ms >= until_ms:
                return
            made += 1
            yield record

    def next_at(self, now_ms: int) -> SimRecord | None:
        """The next record for a live clock: a follow-up that is due, else a new record of a feed chosen by
        the rates of this hour (None when every selected feed is silent now)."""
        if self._pending and self._pending[0].ts_ms <= now_ms:
            record = heapq.heappop(self._pending)
            return self._restamp(record, now_ms)
        rates = self.rates(now_ms)
        total = sum(rates.values())
        return self._make(self._choose(rates, total), now_ms) if total > 0 else None

    def _choose(self, rates: dict[str, float], total: float) -> str:
        pick = self.rng.random() * total
        for feed, rate in rates.items():
            pick -= rate
            if pick < 0:
                return feed
        return next(reversed(rates))

    # ------------------------------------------------------------ records
    def place(self) -> SimPlace:
        return self.places[bisect.bisect(self._cumulative, self.rng.random() * self._cumulative[-1])
                           if len(self.places) > 1 else 0]

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"

    def _noisy(self, place: SimPlace) -> tuple[float, float]:
        spread = self.config.gps_noise_m / 111_320.0
        return (round(place.lat + self.rng.gauss(0, spread), 6),
                round(place.lon + self.rng.gauss(0, spread / math.cos(math.radians(place.lat))), 6))

    def _record(self, ts_ms: int, topic: str, value: dict[str, Any], kind: str) -> SimRecord:
        record = SimRecord(ts_ms, next(self._seq), topic, value, False, kind)
        if self.rng.random() < self.config.malformed_share:
            self._spoil(record)
        return record

    def _make(self, feed: str, ts_ms: int) -> SimRecord:
        make = getattr(self, f"_{feed}")
        record: SimRecord = make(ts_ms)
        return record

    def _hotline(self, ts_ms: int, category: str | None = None, place: SimPlace | None = None,
                 kind: str = "hotline") -> SimRecord:
        category = category or self.rng.choices(list(HOTLINE_TEMPLATES), _HOTLINE_WEIGHTS)[0]
        place = place or self.place()
        record: dict[str, Any] = {
            "call_id": self._id("CALL"), "line": self.rng.choice(["12345", "12345", "12345", "12319"]),
            "received_at": iso(ts_ms), "caller": f"13{self.rng.randrange(10**9):09d}",
            "text": self.rng.choice(HOTLINE_TEMPLATES[category]).format(place=place.described)}
        if place.address and self.rng.random() < 0.6:
            record["address"] = place.address
        if not place.address or self.rng.random() < 0.3:  # a point away from named roads: the app's location
            record["lat"], record["lon"] = self._noisy(place)
        if kind == "hotline" and self.rng.random() < self.config.follow_up_share:
            self._follow_up(ts_ms, category, place)
        return self._record(ts_ms, "hotline.calls", record, kind)

    def _follow_up(self, ts_ms: int, category: str, place: SimPlace) -> None:
        """The same problem reported again: an inspector on patrol or another resident."""
        if category in FIELD_CATEGORIES and self.rng.random() < 0.6:
            later = ts_ms + int(self.rng.uniform(5, 90) * 60_000)
            record = self._field(later, category=category, place=place, kind="follow_up")
        else:
            later = ts_ms + int(self.rng.uniform(1, 120) * 60_000)
            record = self._hotline(later, category=category, place=place, kind="follow_up")
        heapq.heappush(self._pending, record)

    def _field(self, ts_ms: int, category: str | None = None, place: SimPlace | None = None,
               kind: str = "field") -> SimRecord:
        place = place or self.place()
        reporter_kind = self.rng.choice(["inspector", "inspector", "station", "committee"])
        category = category or self.rng.choice(FIELD_CATEGORIES)
        seq = next(self._seq)
        lat, lon = self._noisy(place)
        if reporter_kind == "station" and self.stations and kind == "field" and self.rng.random() < 0.5:
            # 无事报平安: a registered station looked and found nothing
            return self._record(ts_ms, "field.reports", {
                "report_id": self._id("RPT"), "reporter_kind": "station", "reporter_id": self.rng.choice(self.stations),
                "reported_at": iso(ts_ms), "zero_report": True}, kind)
        report: dict[str, Any] = {
            "report_id": self._id("RPT"), "reporter_kind": reporter_kind,
            "reporter_id": (self.rng.choice(self.inspectors) if reporter_kind == "inspector"
                            else self.rng.choice(self.stations) if reporter_kind == "station" and self.stations
                            else f"{reporter_kind[:3].upper()}-{place.street_code}-{self.rng.randrange(1, 12):02d}"),
            "reported_at": iso(ts_ms), "category": category,
            "text": self.rng.choice(HOTLINE_TEMPLATES[category]).format(place=place.described),
            "address": place.address or None, "lat": lat, "lon": lon,
            "photos": [f"s3://citygrid/photos/{seq}-before.jpg"]}
        if reporter_kind == "inspector" and self.rng.random() < 0.4:
            report["handled_on_spot"] = True
            report["after_photos"] = [f"s3://citygrid/photos/{seq}-after.jpg"]
        return self._record(ts_ms, "field.reports", report, kind)

    def _tracks(self, ts_ms: int) -> SimRecord:
        inspector = self.rng.choice(self.inspectors)
        if inspector in self.patrols:
            lat, lon = self._walk(inspector, ts_ms)
        else:
            lat, lon = self._noisy(self.place())
        return self._record(ts_ms, "field.tracks", {"inspector_id": inspector, "ts": iso(ts_ms), "lat": lat,
                                                    "lon": lon}, "tracks")

    def _walk(self, inspector: str, ts_ms: int) -> tuple[float, float]:
        """Where an inspector walking (~1.3 m/s) from cell to cell of its grid is at ``ts_ms``, GPS noise added."""
        cells = self.patrols[inspector]
        if inspector not in self.walkers:
            start, to = self.rng.choice(cells), self.rng.choice(cells)
            self.walkers[inspector] = (ts_ms, start[0], start[1], to[0], to[1])
        last, lat, lon, to_lat, to_lon = self.walkers[inspector]
        step = min(600.0, max(0.0, (ts_ms - last) / 1000)) * 1.3 / 111_320   # degrees walked since
        d_lat, d_lon = to_lat - lat, to_lon - lon
        remaining = math.hypot(d_lat, d_lon)
        if remaining <= step:
            lat, lon = to_lat, to_lon
            to_lat, to_lon = self.rng.choice(cells)
        elif remaining > 0:
            lat, lon = lat + d_lat * step / remaining, lon + d_lon * step / remaining
        self.walkers[inspector] = (max(last, ts_ms), lat, lon, to_lat, to_lon)
        return self._noisy(SimPlace("", lat, lon, ""))

    def _iot(self, ts_ms: int) -> SimRecord:
        device = self.rng.choice(self.devices)
        metric = device["metric"]
        if metric == "ebike_detected":
            value = 1.0 if self.rng.random() < 0.2 else 0.0
        else:
            limit = float(device.get("threshold", 1.0))
            value = round(limit * (1.5 if self.rng.random() < 0.03 else self.rng.uniform(0.05, 0.6)), 3)
        return self._record(ts_ms, "iot.readings", {"device_id": device["device_id"], "ts": iso(ts_ms),
                                                    "metric": metric, "value": value}, "iot")

    def _camera_alert(self, ts_ms: int, camera: dict[str, Any], kind_of_alert: str, kind: str,
                      count: int | None = None) -> SimRecord:
        alert: dict[str, Any] = {"alert_id": self._id("CAMA"), "camera_id": camera["id"], "ts": iso(ts_ms),
                                 "type": kind_of_alert, "confidence": round(self.rng.uniform(0.8, 0.99), 2)}
        if count is not None:
            alert["count"] = count
        return self._record(ts_ms, "camera.alerts", alert, kind)

    def _camera(self, ts_ms: int) -> SimRecord:
        camera = self.rng.choice(self.cameras)
        alert_type = self.rng.choice(list(CAMERA_TYPES))
        record = self._camera_alert(ts_ms, camera, alert_type, "camera")
        if camera.get("address") and self.rng.random() < self.config.follow_up_share:
            # a passer-by calls about what the camera saw
            place = SimPlace(camera["address"], camera["at"][0], camera["at"][1], "")
            later = ts_ms + int(self.rng.uniform(2, 60) * 60_000)
            heapq.heappush(self._pending, self._hotline(later, CAMERA_TYPES[alert_type], place, "follow_up"))
        return record

    def _registry(self, ts_ms: int) -> SimRecord:
        return self._record(ts_ms, "registry.changes", {
            "change_id": self._id("REG"), "ts": iso(ts_ms), "address": self.rng.choice(self.heritage_addresses),
            "kind": self.rng.choice(["housing_contract", "business_scope"]), "detail": "申报变更"}, "registry")

    def _storm_calls(self, ts_ms: int) -> SimRecord:
        return self._hotline(ts_ms, "道路积水", self.rng.choice(self.low_spots), kind="storm")

    def _storm_cameras(self, ts_ms: int) -> SimRecord:
        return self._camera_alert(ts_ms, self.rng.choice(self.cameras), "water_logging", "storm")

    def _crowd_cameras(self, ts_ms: int) -> SimRecord:
        area = [c for c in self.cameras if c.get("area") == self.crowd_area] or self.cameras
        hour = local_hour(ts_ms)
        burst = next(b for b in self.config.bursts if b.feed == "crowd_cameras" and b.active(hour)) \
            if any(b.feed == "crowd_cameras" and b.active(hour) for b in self.config.bursts) else None
        # the crowd swells to its peak mid-event and thins out again
        phase = 0.5 if burst is None else (hour - burst.start_hour) / burst.hours
        peak = 3500 * math.sin(math.pi * min(1.0, max(0.0, phase)))
        count = max(50, int(self.rng.gauss(peak, peak * 0.1 + 20)))
        return self._camera_alert(ts_ms, self.rng.choice(area), "crowd_count", "crowd", count=count)

    # ------------------------------------------------------------ malformed records
    def _spoil(self, record: SimRecord) -> None:
        assert isinstance(record.value, dict)
        value = dict(record.value)
        how = self.rng.randrange(4)
        if how == 0:   # a required field missing
            value.pop(next(iter(value)))
        elif how == 1:  # a field of the wrong type
            value[next(iter(value))] = 12345
        elif how == 2:  # a timestamp nobody can read
            for name in ("received_at", "reported_at", "ts"):
                if name in value:
                    value[name] = "昨天下午"
        if how == 3:    # cut off in transit: not JSON at all
            record.value = json.dumps(value, ensure_ascii=False).encode("utf-8")[: self.rng.randrange(1, 12)]
        else:
            record.value = value
        record.malformed = True

    def _restamp(self, record: SimRecord, now_ms: int) -> SimRecord:
        """A follow-up played on a live clock carries the time it is sent."""
        if isinstance(record.value, dict) and not record.malformed:
            for name in ("received_at", "reported_at", "ts"):
                if name in record.value:
                    record.value[name] = iso(now_ms)
        record.ts_ms = now_ms
        return record


_HOTLINE_WEIGHTS = [HOTLINE_WEIGHTS.get(name, 1.0) for name in HOTLINE_TEMPLATES]


def scenario_for(knowledge: Any, seed: int, config: ScenarioConfig | None = None,
                 sources: Sequence[str] = SOURCES) -> CityScenario:
    """The scenario over a loaded Knowledge's city: its roads and addresses, devices and cameras."""
    cameras = [{"id": c.id, "area": c.area, "address": c.location.address, "at": (c.location.lat, c.location.lon)}
               for c in knowledge.devices.cameras.values()]
    return CityScenario(seed, district_places(knowledge.city), devices=knowledge.sample_devices(), cameras=cameras,
                        heritage_addresses=knowledge.sample_heritage_addresses(), config=config, sources=sources,
                        patrols=patrols_of(knowledge), stations=sorted(knowledge.field.stations)
                        if getattr(knowledge, "field", None) else ())


def patrols_of(knowledge: Any) -> dict[str, list[tuple[float, float]]]:
    """Inspector id -> the centres of the unit cells of its responsibility grid (empty: no field.yaml)."""
    field = getattr(knowledge, "field", None)
    if field is None:
        return {}
    return {inspector: [tuple(h3.cell_to_latlng(c)) for c in sorted(field.grids[grid].cells)]
            for inspector, grid in field.inspectors.items()}
