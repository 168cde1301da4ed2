"""Cross-source deduplication (同一问题多渠道反映 → 一案): which open case a new signal joins.

A signal joins an open case when the categories are the same or compatible, the places match
(within a per-category radius, or the same grid unit cell, or the same normalised address) and
the times are within a per-category window (群租 lasts days, 暴露垃圾 hours). A sensor keeps
alerting on its case until that case closes, whatever the window.

The radii, windows and compatible-category groups are the officer's to edit: they are the ``merge``
section of the knowledge base (kb.yaml), loaded into a ``MergeRules`` and handed to the index.

The index is derived from the case documents (``rebuild``), so it needs no state of its own:
after a restart or a rebalance it is rebuilt from the (changelog-backed) cases table.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import NamedTuple

from streams.core.cases.model import CaseDoc, Place
from streams.core.model import Signal

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
EARTH_RADIUS_M = 6_371_000.0
# Metres per degree of latitude, and the latitude up to which a bucket is at least as wide (east-west)
# as the largest merge radius.
M_PER_DEG = 111_320.0
BUCKET_LATITUDE_LIMIT = 45.0
# Smallest bucket of the spatial hash (degrees): larger radii widen it (``MergeRules.bucket_deg``).
BUCKET_DEG = 0.003
# The index's grid is finer: a bucket per category group as wide as that group's largest radius (no less than
# this), so the 3×3 buckets around a report hold few cases beyond the ones within reach.
FINE_BUCKET_DEG = 0.0002
# Metres per degree of latitude on the sphere haversine_m measures on: no two points farther apart in latitude
# than radius / this (plus a rounding margin) are within the radius.
M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180


@dataclass(frozen=True)
class MergeRule:
    radius_m: float
    window_ms: int


@dataclass(frozen=True)
class MergeRules:
    """Who merges with whom: per-category radius and window (by the taxonomy's Chinese name, the
    stable key across KB versions), a default for the rest, and groups of compatible categories that
    describe one problem seen differently by different sources (a camera says 占道经营 where a caller
    says 无照经营 for the same unlicensed stall)."""

    default: MergeRule = MergeRule(radius_m=80.0, window_ms=DAY_MS)
    by_category: Mapping[str, MergeRule] = field(default_factory=dict)
    groups: tuple[frozenset[str], ...] = ()

    def rule_for(self, category_name: str) -> MergeRule:
        return self.by_category.get(category_name, self.default)

    def group_of(self, category_name: str) -> str:
        """The key that compatible categories share (the index is split by it)."""
        cache = self._group_cache
        key = cache.get(category_name)
        if key is None:
            key = cache[category_name] = next((min(g) for g in self.groups if category_name in g), category_name)
        return key

    def compatible(self, name_a: str, name_b: str) -> bool:
        if name_a == name_b:
            return True
        cache = self._compatible_cache
        pair = (name_a, name_b)
        found = cache.get(pair)
        if found is None:
            found = cache[pair] = any(name_a in g and name_b in g for g in self.groups)
        return found

    # Caches of the pure functions above (the rules are frozen; a KB reload makes new rules). cached_property
    # keeps them out of the dataclass fields, so equality and repr stay the rules'.
    @cached_property
    def _group_cache(self) -> dict[str, str]:
        return {}

    @cached_property
    def _compatible_cache(self) -> dict[tuple[str, str], bool]:
        return {}

    @cached_property
    def _grid_cache(self) -> dict[str, tuple[float, float]]:
        return {}

    @cached_property
    def largest_radius_m(self) -> float:
        return max([r.radius_m for r in self.by_category.values()] + [self.default.radius_m])

    def grid_of(self, group: str) -> tuple[float, float]:
        """(latitude, longitude) bucket size in degrees of the index's grid for a category group: at least the
        largest radius of the group's categories north-south, and east-west up to 45° latitude (beyond, the
        index looks further east and west: ``DedupIndex._bucket_keys``)."""
        grid = self._grid_cache.get(group)
        if grid is None:
            members = {group}.union(*(g for g in self.groups if min(g) == group))
            radius = max(self.rule_for(name).radius_m for name in members)
            lat_deg = max(FINE_BUCKET_DEG, math.ceil(radius / M_PER_DEG_LAT * 1.001 * 1e6) / 1e6)
            grid = self._grid_cache[group] = (lat_deg, lat_deg / math.cos(math.radians(BUCKET_LATITUDE_LIMIT)))
        return grid

    @cached_property
    def bucket_deg(self) -> float:
        """Bucket size of the spatial hash: at least the largest radius in both directions up to 45°
        latitude, so the 3×3 buckets around a signal hold every candidate."""
        needed = self.largest_radius_m / (M_PER_DEG * math.cos(math.radians(BUCKET_LATITUDE_LIMIT)))
        return max(BUCKET_DEG, math.ceil(needed * 10_000) / 10_000)


NO_RULES = MergeRules()  # same category, 80 m, one day: what an engine without a KB `merge` section does

_ADDRESS_PREFIXES = ("上海市", "上海", "徐汇区")


def normalise_address(address: str | None) -> str | None:
    """Full-width → half-width, no spaces or punctuation, city/district prefix dropped."""
    if not address:
        return None
    return _normalised(address)


@lru_cache(maxsize=16384)
def _normalised(address: str) -> str | None:
    # cached: every report's address is normalised for its lookup, its match and its case's places
    text = unicodedata.normalize("NFKC", address).strip().lower()
    text = re.sub(r"[\s,，。、()（）\-—_#]", "", text)
    for prefix in _ADDRESS_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text or None


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def device_of(signal: Signal) -> str | None:
    """The sensor or camera that raised a signal, when the ingest recorded it in ``extra``."""
    try:
        extra = signal.extra_dict()
    except ValueError:
        return None
    device = extra.get("device_id") or extra.get("camera_id")
    return str(device) if device else None


def _bucket(lat: float, lon: float, size_deg: float) -> tuple[int, int]:
    return (math.floor(lat / size_deg), math.floor(lon / size_deg))


# Index keys start with the category group: (group, bucket i, bucket j) or (group, cell | address | device).
BucketKey = tuple[str, int, int]
PlaceKey = tuple[str, str]
IndexKey = BucketKey | PlaceKey


class _Spot(NamedTuple):
    """One place of an indexed case, ready to match: what _same_place reads, and the latitude in radians
    and its cosine that haversine_m would compute from it."""

    lat: float | None
    lon: float | None
    cell: str | None
    address_key: str | None
    lat_rad: float
    cos_lat: float


class _Entry(NamedTuple):
    """What matching reads of an indexed case (from its summary, as ``matches`` would read it)."""

    category_name: str
    partition: int
    opened_ms: int
    last_ms: int
    devices: tuple[str, ...]
    spots: tuple[_Spot, ...]


PlaceKeys = tuple[tuple[str, IndexKey], ...]   # (table, key) of a place, in the order update lists them
# what update last saw of a case: (group, places, devices, {id(place dict): its spot and keys})
_Seen = tuple[str, list[Place], tuple[str, ...], dict[int, tuple[_Spot, PlaceKeys]]]


class _Probe(NamedTuple):
    """What matching reads of a signal, worked out once per signal rather than once per candidate case."""

    group: str
    address_key: str | None
    device: str | None
    lat_rad: float
    cos_lat: float


@dataclass
class DedupIndex:
    """Open cases by place: spatial buckets, unit cell, normalised address and device.

    The spatial grid is per category group (``MergeRules.grid_of``), as fine as the group's largest radius,
    so the 3×3 buckets around a report hold the cases within reach and few more. Besides the keys, the
    index keeps of each case what matching reads (``entries``), so :meth:`match` checks a candidate with
    no document lookup and a haversine only for the places within the radius north-south."""

    rules: MergeRules = NO_RULES
    by_bucket: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_cell: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_address: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_device: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    # case_id -> (table, key) of each place and device; tuples, not lists: the garbage collector stops
    # looking at a tuple of strings and numbers, while every list it keeps scanning
    keys: dict[str, tuple[tuple[str, IndexKey], ...]] = field(default_factory=dict)
    entries: dict[str, _Entry] = field(default_factory=dict)                  # case_id -> what matching reads
    # case_id -> (group, places, devices, {id(place dict): its spot and keys}) as last indexed
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def rebuild(self, cases: Mapping[str, CaseDoc]) -> None:
        """Index every open case of the mapping (call after a restart or a partition assignment)."""
        for table in (self.by_bucket, self.by_cell, self.by_address, self.by_device):
            table.clear()
        self.keys.clear()
        self.entries.clear()
        self._seen.clear()
        for case_id in list(cases):  # only iteration and get(): a Faust-table view suffices
            doc = cases.get(case_id)
            if doc is not None:
                self.update(case_id, doc)

    def update(self, case_id: str, doc: CaseDoc) -> None:
        """(Re)index one case; closed and void cases leave the index."""
        if not doc.get("open", False):
            self.remove(case_id)
            return
        group = self.rules.group_of(doc["category_name"])
        places = doc.get("places", [])
        devices = tuple(doc.get("devices", []))
        seen = self._seen.get(case_id)
        if seen is not None and seen[0] == group and (seen[1] is places or seen[1] == places) and seen[2] == devices:
            spots = self.entries[case_id].spots   # a report at a place the case knew: the keys stay as they are
        else:
            # a merge shares the place dicts it keeps (engine._clone_for_merge): those are worked out already
            known = seen[3] if seen is not None and seen[0] == group else {}
            worked: dict[int, tuple[_Spot, PlaceKeys]] = {}
            entries: list[tuple[str, IndexKey]] = []
            spot_list: list[_Spot] = []
            for place in places:
                done = known.get(id(place))
                if done is None:
                    done = self._work_out(group, place)
                worked[id(place)] = done
                spot_list.append(done[0])
                entries.extend(done[1])
            for device in devices:
                entries.append(("device", (group, device)))
            spots = tuple(spot_list)
            keys = tuple(entries)
            old = self.keys.get(case_id)
            if old != keys:   # only the keys that came or went change the tables
                wanted = dict.fromkeys(keys)
                added: Iterable[tuple[str, IndexKey]] = wanted
                if old is not None:
                    had = dict.fromkeys(old)
                    self._drop_keys(case_id, [k for k in had if k not in wanted])
                    added = [k for k in wanted if k not in had]
                tables = self._tables
                for kind, key in added:
                    tables[kind][key].add(case_id)
                self.keys[case_id] = keys
            # holding `places` keeps its dicts alive, so their ids in `worked` stay theirs
            self._seen[case_id] = (group, places, devices, worked)
        self.entries[case_id] = _Entry(doc["category_name"], doc.get("partition", 0), doc["opened_ms"],
                                       doc.get("last_signal_ms", doc["opened_ms"]), devices, spots)

    def _work_out(self, group: str, place: Place) -> tuple[_Spot, PlaceKeys]:
        """A place's spot and index keys (bucket, cell, address), in the order update lists them."""
        lat_deg, lon_deg = self.rules.grid_of(group)
        keys: list[tuple[str, IndexKey]] = []
        lat, lon = place.get("lat"), place.get("lon")
        cell, address_key = place.get("cell"), place.get("address_key")
        if lat is not None and lon is not None:
            keys.append(("bucket", (group, math.floor(lat / lat_deg), math.floor(lon / lon_deg))))
            lat_rad = math.radians(lat)
            spot = _Spot(lat, lon, cell, address_key, lat_rad, math.cos(lat_rad))
        else:
            spot = _Spot(lat, lon, cell, address_key, 0.0, 0.0)
        if cell:
            keys.append(("cell", (group, cell)))
        if address_key:
            keys.append(("address", (group, address_key)))
        return spot, tuple(keys)

    def remove(self, case_id: str) -> None:
        self.entries.pop(case_id, None)
        self._seen.pop(case_id, None)
        self._drop_keys(case_id, self.keys.pop(case_id, ()))

    def _drop_keys(self, case_id: str, keys: Iterable[tuple[str, IndexKey]]) -> None:
        tables = self._tables
        for kind, key in keys:
            table = tables[kind]
            ids = table.get(key)
            if ids is not None:
                ids.discard(case_id)
                if not ids:
                    del table[key]

    def __post_init__(self) -> None:
        self._tables = {"bucket": self.by_bucket, "cell": self.by_cell, "address": self.by_address,
                        "device": self.by_device}

    def probe(self, signal: Signal) -> _Probe:
        """What matching reads of the signal (for :meth:`candidates` and :meth:`match`)."""
        lat_rad = math.radians(signal.lat) if signal.lat is not None and signal.lon is not None else 0.0
        return _Probe(self.rules.group_of(signal.category_name), normalise_address(signal.address),
                      device_of(signal), lat_rad, math.cos(lat_rad))

    def candidates(self, signal: Signal, probe: _Probe | None = None) -> set[str]:
        """Open cases of a compatible category near the signal (by bucket, cell, address or device)."""
        probe = probe or self.probe(signal)
        found: set[str] = set()
        group = probe.group
        if signal.lat is not None and signal.lon is not None:
            buckets = self.by_bucket
            for key in self._bucket_keys(group, signal.lat, signal.lon):
                ids = buckets.get(key)
                if ids:
                    found |= ids
        terms: tuple[tuple[dict[IndexKey, set[str]], str | None], ...] = (
            (self.by_cell, signal.cell), (self.by_address, probe.address_key), (self.by_device, probe.device))
        for index, term in terms:
            if term:
                ids = index.get((group, term))
                if ids:
                    found |= ids
        return found

    def _bucket_keys(self, group: str, lat: float, lon: float) -> list[BucketKey]:
        """The buckets that hold every place of the group within reach: 3×3 up to 45° latitude; beyond, as
        many more east and west as the meridians draw together."""
        lat_deg, lon_deg = self.rules.grid_of(group)
        bi, bj = math.floor(lat / lat_deg), math.floor(lon / lon_deg)
        reach = 1
        if abs(lat) > BUCKET_LATITUDE_LIMIT - 1:
            shrink = math.cos(math.radians(min(89.0, abs(lat) + lat_deg)))
            reach = max(1, math.ceil(lat_deg / (lon_deg * shrink) * 1.01))
        return [(group, bi + di, bj + dj) for di in (-1, 0, 1) for dj in range(-reach, reach + 1)]

    def find(self, signal: Signal, cases: Mapping[str, CaseDoc], partition: int | None = None) -> str | None:
        """The open case this signal belongs to, or None. The nearest in time wins among several.
        With ``partition``, only cases of that partition qualify: a case never moves between the
        changelog partitions of the cases table (nor is it taken from a standby replica)."""
        best: tuple[int, str] | None = None
        address_key = normalise_address(signal.address)
        for case_id in sorted(self.candidates(signal)):
            doc = cases.get(case_id)
            if doc is None or not doc.get("open", False):
                continue
            if partition is not None and doc.get("partition", 0) != partition:
                continue
            if matches(signal, doc, address_key, self.rules):
                gap = abs(signal.ts_ms - doc.get("last_signal_ms", doc["opened_ms"]))
                if best is None or gap < best[0]:
                    best = (gap, case_id)
        return best[1] if best else None

    def match(self, signal: Signal, candidates: Iterable[str], partition: int | None = None,
              probe: _Probe | None = None) -> str | None:
        """:meth:`find` over the cases as this index saw them (``update``): the same answer as ``find`` with the
        mapping of the documents (or summaries) the index was given, without reading that mapping."""
        probe = probe or self.probe(signal)
        rules = self.rules
        name, ts = signal.category_name, signal.ts_ms
        cell, address_key = signal.cell, probe.address_key
        sensor_device = probe.device if signal.source_kind == "sensor" else None
        located = signal.lat is not None and signal.lon is not None
        lat, lon = signal.lat or 0.0, signal.lon or 0.0
        lat_rad, cos_lat = probe.lat_rad, probe.cos_lat
        entries = self.entries
        best: tuple[int, str] | None = None
        for case_id in candidates:
            entry = entries.get(case_id)
            if entry is None:
                continue
            if partition is not None and entry.partition != partition:
                continue
            if not rules.compatible(name, entry.category_name):
                continue
            if not (sensor_device and sensor_device in entry.devices):
                rule = rules.rule_for(entry.category_name)
                if not (entry.opened_ms - rule.window_ms <= ts <= entry.last_ms + rule.window_ms):
                    continue
                radius = rule.radius_m
                reach_deg = radius / M_PER_DEG_LAT * 1.000001
                for spot in entry.spots:
                    if cell and spot.cell == cell:
                        break
                    if address_key and spot.address_key == address_key:
                        break
                    if located and spot.lat is not None and spot.lon is not None:
                        if abs(spot.lat - lat) > reach_deg:
                            continue   # farther north-south than the radius: haversine_m would say no
                        # haversine_m(lat, lon, spot.lat, spot.lon), term for term
                        dl = math.radians(spot.lon - lon)
                        h = math.sin((spot.lat_rad - lat_rad) / 2) ** 2 + cos_lat * spot.cos_lat * math.sin(dl / 2) ** 2
                        if 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h))) <= radius:
                            break
                else:
                    continue
            gap = abs(ts - entry.last_ms)
            if best is None or (gap, case_id) < best:
                best = (gap, case_id)   # the nearest in time; among equals the first id, as find's sorted scan
        return best[1] if best else None


class _Unset:
    """The type of _UNSET: "not given" where None is a valid value."""


_UNSET = _Unset()


def matches(signal: Signal, doc: CaseDoc, address_key: str | None | _Unset = _UNSET,
            rules: MergeRules = NO_RULES) -> bool:
    """Does the signal describe the same problem as the (open) case?"""
    if not rules.compatible(signal.category_name, doc["category_name"]):
        return False
    device = device_of(signal)
    if signal.source_kind == "sensor" and device and device in doc.get("devices", []):
        return True  # a sensor stays on its case until the case closes
    rule = rules.rule_for(doc["category_name"])
    first, last = doc["opened_ms"], doc.get("last_signal_ms", doc["opened_ms"])
    if not (first - rule.window_ms <= signal.ts_ms <= last + rule.window_ms):
        return False
    key = normalise_address(signal.address) if isinstance(address_key, _Unset) else address_key
    return any(_same_place(signal, key, place, rule) for place in doc.get("places", []))


def _same_place(signal: Signal, address_key: str | None, place: Place, rule: MergeRule) -> bool:
    if signal.cell and place.get("cell") == signal.cell:
        return True
    if address_key and place.get("address_key") == address_key:
        return True
    lat, lon = place.get("lat"), place.get("lon")
    if signal.lat is not None and signal.lon is not None and lat is not None and lon is not None:
        return haversine_m(signal.lat, signal.lon, lat, lon) <= rule.radius_m
    return False


def place_of(signal: Signal) -> Place:
    """What a case remembers of each report's place (for matching later signals)."""
    return {"lat": signal.lat, "lon": signal.lon, "cell": signal.cell,
            "address_key": normalise_address(signal.address)}


def add_place(places: list[Place], place: Place, limit: int = 20) -> list[Place]:
    """Keep distinct places, bounded: a case reported 1000 times must not grow without end."""
    if place in places:
        return places
    return (places + [place])[-limit:]


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
