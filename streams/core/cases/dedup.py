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
        for group in self.groups:
            if category_name in group:
                return min(group)
        return category_name

    def compatible(self, name_a: str, name_b: str) -> bool:
        return name_a == name_b or any(name_a in g and name_b in g for g in self.groups)

    @property
    def largest_radius_m(self) -> float:
        return max([r.radius_m for r in self.by_category.values()] + [self.default.radius_m])

    @property
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


@dataclass
class DedupIndex:
    """Open cases by place: spatial buckets, unit cell, normalised address and device."""

    rules: MergeRules = NO_RULES
    by_bucket: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_cell: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_address: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_device: dict[IndexKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    keys: dict[str, list[tuple[str, IndexKey]]] = field(default_factory=dict)  # case_id -> (table, key)

    def rebuild(self, cases: Mapping[str, CaseDoc]) -> None:
        """Index every open case of the mapping (call after a restart or a partition assignment)."""
        for table in (self.by_bucket, self.by_cell, self.by_address, self.by_device):
            table.clear()
        self.keys.clear()
        for case_id in list(cases):  # only iteration and get(): a Faust-table view suffices
            doc = cases.get(case_id)
            if doc is not None:
                self.update(case_id, doc)

    def update(self, case_id: str, doc: CaseDoc) -> None:
        """(Re)index one case; closed and void cases leave the index."""
        self.remove(case_id)
        if not doc.get("open", False):
            return
        group = self.rules.group_of(doc["category_name"])
        size = self.rules.bucket_deg
        entries: list[tuple[str, IndexKey]] = []
        for place in doc.get("places", []):
            lat, lon = place.get("lat"), place.get("lon")
            if lat is not None and lon is not None:
                entries.append(("bucket", (group, *_bucket(lat, lon, size))))
            cell, address_key = place.get("cell"), place.get("address_key")
            if cell:
                entries.append(("cell", (group, cell)))
            if address_key:
                entries.append(("address", (group, address_key)))
        for device in doc.get("devices", []):
            entries.append(("device", (group, device)))
        for kind, key in dict.fromkeys(entries):
            self._table(kind)[key].add(case_id)
        self.keys[case_id] = entries

    def remove(self, case_id: str) -> None:
        for kind, key in self.keys.pop(case_id, []):
            table = self._table(kind)
            ids = table.get(key)
            if ids is not None:
                ids.discard(case_id)
                if not ids:
                    del table[key]

    def _table(self, kind: str) -> dict[IndexKey, set[str]]:
        return {"bucket": self.by_bucket, "cell": self.by_cell, "address": self.by_address,
                "device": self.by_device}[kind]

    def candidates(self, signal: Signal) -> set[str]:
        """Open cases of a compatible category near the signal (by bucket, cell, address or device)."""
        found: set[str] = set()
        group = self.rules.group_of(signal.category_name)
        if signal.lat is not None and signal.lon is not None:
            bi, bj = _bucket(signal.lat, signal.lon, self.rules.bucket_deg)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    found |= self.by_bucket.get((group, bi + di, bj + dj), set())
        if signal.cell:
            found |= self.by_cell.get((group, signal.cell), set())
        address_key = normalise_address(signal.address)
        if address_key:
            found |= self.by_address.get((group, address_key), set())
        device = device_of(signal)
        if device:
            found |= self.by_device.get((group, device), set())
        return found

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
