"""The sample city on the grid: unit cells (H3) -> community -> street -> district, a gazetteer
of roads and door numbers, the 衡复 heritage zone, departments and the component registry.

`City.locate` turns coordinates and/or an address (or a free text) into a `Location`, or says
why it cannot (the caller sends that record to manual triage 人工分拨).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import h3
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Hamming

from streams.core.knowledge.classify import normalise_text
from streams.core.knowledge.taxonomy import DataError, load_marked_yaml, validate_marked
from streams.core.model import CTX_COMPOUND, CTX_HERITAGE, CTX_STREET_FRONT, Location

LatLon = tuple[float, float]
ADDRESS_KINDS = ("compound", "street_front", "building", "public")
# A component within this distance of a location is "the" component of a report there.
COMPONENT_RADIUS_M = 40.0


# ---------------------------------------------------------------- file schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StreetIn(_Strict):
    code: str = Field(pattern=r"^[A-Z]{2}\d{2}$")
    name: str
    aliases: list[str] = []
    center: tuple[float, float]
    departments: dict[str, str] = {}   # department kind -> this street's instance name


class _CommunityIn(_Strict):
    name: str
    street: str
    center: tuple[float, float]
    rings: int = Field(1, ge=0, le=5)


class _RoadIn(_Strict):
    name: str
    from_: tuple[float, float] = Field(alias="from")
    to: tuple[float, float]
    numbers: tuple[int, int]


class _AddressIn(_Strict):
    address: str
    kind: str = Field(pattern="^(" + "|".join(ADDRESS_KINDS) + ")$")
    at: tuple[float, float]
    community: str | None = None
    name: str | None = None


class _HeritageIn(_Strict):
    name: str
    outline: list[tuple[float, float]] = Field(min_length=3)


class _DepartmentIn(_Strict):
    name: str
    scope: str = Field(pattern="^(district|street|community)$")
    role: str
    level: int | None = None
    instance: str | None = None         # e.g. "{street}城管中队": the per-street (community) instance name


class _ComponentIn(_Strict):
    id: str
    kind: str
    address: str | None = None
    at: tuple[float, float]
    owner: str
    note: str | None = None


class _CityIn(_Strict):
    version: str
    city: str
    district: str
    district_code: str
    h3_resolution: int = Field(ge=5, le=12)
    outline: list[tuple[float, float]] = Field(min_length=3)
    streets: list[_StreetIn] = Field(min_length=1)
    communities: list[_CommunityIn]
    roads: list[_RoadIn]
    addresses: list[_AddressIn]
    heritage_zone: _HeritageIn
    departments: list[_DepartmentIn] = Field(min_length=1)
    components: list[_ComponentIn] = []


# ---------------------------------------------------------------- plain data
@dataclass(frozen=True)
class Street:
    code: str
    name: str
    aliases: tuple[str, ...]
    center: LatLon


@dataclass(frozen=True)
class Community:
    name: str
    street: str
    center: LatLon
    cells: frozenset[str]


@dataclass(frozen=True)
class Road:
    name: str
    start: LatLon
    end: LatLon
    numbers: tuple[int, int]

    def point(self, number: int) -> LatLon:
        """Where door `number` lies, by linear interpolation along the road (clamped to its ends)."""
        lo, hi = self.numbers
        t = 0.0 if hi == lo else min(1.0, max(0.0, (number - lo) / (hi - lo)))
        return (self.start[0] + t * (self.end[0] - self.start[0]), self.start[1] + t * (self.end[1] - self.start[1]))


@dataclass(frozen=True)
class Address:
    address: str
    kind: str
    at: LatLon
    community: str | None
    name: str | None


@dataclass(frozen=True)
class Component:
    id: str
    kind: str
    address: str | None
    at: LatLon
    owner: str


@dataclass(frozen=True)
class Department:
    name: str
    scope: str
    role: str
    instance: str | None = None   # template with {street}, {street_short} or {community}


# Placeholders an instance template may use, by the department's scope.
INSTANCE_FIELDS = {"street": ("street", "street_short"), "community": ("community", "street", "street_short")}
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


def street_short(name: str) -> str:
    """徐家汇街道 -> 徐家汇, 华泾镇 -> 华泾."""
    for suffix in ("街道", "镇"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class ParsedAddress:
    """What an address string says: a road and door number and/or a community name."""

    road: str | None = None
    number: int | None = None
    unit: str | None = None          # 号 (door) | 弄 (lane, i.e. a residential compound)
    community: str | None = None
    key: str | None = None           # canonical "road+number+unit", the gazetteer key

    def __bool__(self) -> bool:
        return bool(self.road or self.community)


def _copy_location(loc: Location) -> Location:
    """A copy of a cached location (callers may extend its context). Shallow: its other fields are
    immutable values; ``dataclasses.replace`` costs several times more on the ingest path."""
    copy = object.__new__(Location)
    copy.__dict__.update(loc.__dict__)
    copy.context = list(loc.context)
    return copy


# ---------------------------------------------------------------- address parsing
_NUMBER_RE = re.compile(r"\s*(\d{1,5})\s*(号|弄)")
# Parsed and located address strings kept per City: a city's reports name the same addresses again
# and again, and parsing one (normalise, strip place names, exact then fuzzy road and community
# search) costs more than the rest of the ingest. The city data does not change after loading.
ADDRESS_CACHE_SIZE = 8192


def distance_m(a: LatLon, b: LatLon) -> float:
    return float(h3.great_circle_distance(a, b, unit="m"))


@dataclass
class City:
    version: str
    city: str
    district: str
    district_code: str
    resolution: int
    streets: dict[str, Street]                      # by name
    communities: dict[str, Community]
    roads: dict[str, Road]
    addresses: dict[str, Address]                    # by canonical address
    heritage_name: str
    heritage_cells: frozenset[str]
    departments: dict[str, Department]
    components: list[Component]
    cell_street: dict[str, str] = field(default_factory=dict)      # cell -> street name
    cell_community: dict[str, str] = field(default_factory=dict)   # cell -> community name
    # (department kind, street or community name) -> that place's instance of the kind
    instances: dict[tuple[str, str], str] = field(default_factory=dict)
    unit_kind: dict[str, str] = field(default_factory=dict)        # instance name -> department kind

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Path) -> City:
        raw = load_marked_yaml(path)
        data = validate_marked(_CityIn, raw, path)
        res = data.h3_resolution

        def fail(section: str, index: int, fld: str, problem: str) -> DataError:
            return DataError(path, raw[section].item_lines[index], f"{section}[{index}].{fld}", problem)

        streets: dict[str, Street] = {}
        for i, s in enumerate(data.streets):
            if s.name in streets or s.code in {x.code for x in streets.values()}:
                raise fail("streets", i, "name", f"duplicate street {s.name}/{s.code}")
            streets[s.name] = Street(s.code, s.name, tuple(s.aliases), s.center)

        outline = h3.LatLngPoly(list(data.outline))
        cells = set(h3.polygon_to_cells(outline, res))
        if not cells:
            raise DataError(path, raw["outline"].line, "outline", "the outline contains no grid cell")
        cos_lat = math.cos(math.radians(sum(p[0] for p in data.outline) / len(data.outline)))

        def nearest_street(cell: str) -> str:
            lat, lon = h3.cell_to_latlng(cell)
            return min(streets.values(),
                       key=lambda s: (s.center[0] - lat) ** 2 + ((s.center[1] - lon) * cos_lat) ** 2).name

        cell_street = {c: nearest_street(c) for c in sorted(cells)}
        for i, s in enumerate(data.streets):
            if h3.latlng_to_cell(*s.center, res) not in cells:
                raise fail("streets", i, "center", f"{s.name} centre lies outside the district outline")

        communities: dict[str, Community] = {}
        cell_community: dict[str, str] = {}
        for i, c in enumerate(data.communities):
            if c.street not in streets:
                raise fail("communities", i, "street", f"unknown street {c.street!r}")
            if c.name in communities:
                raise fail("communities", i, "name", f"duplicate community {c.name}")
            center_cell = h3.latlng_to_cell(*c.center, res)
            if center_cell not in cells:
                raise fail("communities", i, "center", f"{c.name} lies outside the district outline")
            own = frozenset(x for x in h3.grid_disk(center_cell, c.rings) if x in cells)
            for cell in own:
                if cell in cell_community:
                    raise fail("communities", i, "rings", f"{c.name} overlaps {cell_community[cell]} (cell {cell})")
                cell_community[cell] = c.name
                cell_street[cell] = c.street   # the community's street is authoritative
            communities[c.name] = Community(c.name, c.street, c.center, own)

        roads = {r.name: Road(r.name, r.from_, r.to, r.numbers) for r in data.roads}
        departments = {d.name: Department(d.name, d.scope, d.role, d.instance) for d in data.departments}
        instances, unit_kind = _department_instances(data, raw, path, departments)

        addresses: dict[str, Address] = {}
        city = cls(data.version, data.city, data.district, data.district_code, res, streets, communities, roads,
                   addresses, data.heritage_zone.name, frozenset(), departments, [], cell_street, cell_community,
                   instances, unit_kind)
        for i, a in enumerate(data.addresses):
            parsed = city.parse_address(a.address)
            if not parsed.key or not parsed.road or parsed.road not in normalise_text(a.address):
                raise fail("addresses", i, "address",
                           f"{a.address!r} is not <known road><number>号|弄 (add the road to roads)")
            key = parsed.key
            if a.community and a.community not in communities:
                raise fail("addresses", i, "community", f"unknown community {a.community!r}")
            if h3.latlng_to_cell(*a.at, res) not in cells:
                raise fail("addresses", i, "at", f"{a.address} lies outside the district outline")
            if key in addresses:
                raise fail("addresses", i, "address", f"duplicate address {a.address}")
            addresses[key] = Address(key, a.kind, a.at, a.community, a.name)

        heritage = h3.LatLngPoly(list(data.heritage_zone.outline))
        city.heritage_cells = frozenset(h3.polygon_to_cells(heritage, res)) & cells
        if not city.heritage_cells:
            raise DataError(path, raw["heritage_zone"].line, "heritage_zone.outline", "the zone contains no grid cell")

        for i, comp in enumerate(data.components):
            if comp.owner not in departments:
                raise fail("components", i, "owner", f"unknown department {comp.owner!r}")
            address = city.parse_address(comp.address).key if comp.address else None
            city.components.append(Component(comp.id, comp.kind, address, comp.at, comp.owner))
        return city

    # ------------------------------------------------------------ department instances
    def unit_of(self, kind: str, street: str | None, community: str | None = None) -> str:
        """The instance of department ``kind`` that serves the place (its kind name when the place
        has none: a district-wide department, or a case outside any street/community)."""
        department = self.departments.get(kind)
        if department is None or department.scope == "district":
            return kind
        place = community if department.scope == "community" else street
        return self.instances.get((kind, place), kind) if place else kind

    def kind_of(self, name: str) -> str | None:
        """The department kind of a kind or instance name (None: not in the directory)."""
        return name if name in self.departments else self.unit_kind.get(name)

    # ------------------------------------------------------------ lookups
    def street_by_name(self, name: str) -> Street | None:
        if name in self.streets:
            return self.streets[name]
        for s in self.streets.values():
            if name in s.aliases:
                return s
        return None

    def street_by_code(self, code: str) -> Street | None:
        return next((s for s in self.streets.values() if s.code == code), None)

    @cached_property
    def _place_names(self) -> list[str]:
        """City, district and street names (longest first): stripped before parsing an address."""
        names = [self.city, "上海", self.district, "徐汇"]
        for s in self.streets.values():
            names += [s.name, *s.aliases]
        return sorted(names, key=len, reverse=True)

    def parse_address(self, text: str) -> ParsedAddress:
        """Find a known road (exact, then fuzzy) followed by a door number, and/or a community name."""
        return replace(self._parsed(text))   # a copy: the cached one is shared

    @cached_property
    def _parsed(self) -> Callable[[str], ParsedAddress]:
        return lru_cache(maxsize=ADDRESS_CACHE_SIZE)(self._parse_address)

    def _parse_address(self, text: str) -> ParsedAddress:
        norm = normalise_text(text)
        for name in self._place_names:
            norm = norm.replace(name, " ")
        out = ParsedAddress()
        for name in self._communities_longest_first:
            if name in norm:
                out.community = name
                break
        road, rest = self._find_road(norm)
        if road:
            out.road = road
            m = _NUMBER_RE.match(rest)
            if m:
                out.number, out.unit = int(m.group(1)), m.group(2)
                out.key = f"{road}{out.number}{out.unit}"
        if out.community is None:
            out.community = self._fuzzy_community(norm)
        return out

    @cached_property
    def _roads_longest_first(self) -> list[str]:
        return sorted(self.roads, key=len, reverse=True)

    @cached_property
    def _communities_longest_first(self) -> list[str]:
        return sorted(self.communities, key=len, reverse=True)

    def _find_road(self, norm: str) -> tuple[str | None, str]:
        for name in self._roads_longest_first:
            pos = norm.find(name)
            if pos >= 0:
                return name, norm[pos + len(name):]
        # Fuzzy: a typo in the road name right before a door number, e.g. 钦江璐15号. Same length and
        # one character different (Hamming); in a 3-character name only the suffix may differ, so a
        # real road missing from the gazetteer (天山路) is never taken for a known one (天平路).
        for m in re.finditer(r"([\u4e00-\u9fff]{3,8})(?=\s*\d{1,5}\s*(?:号|弄))", norm):
            token = m.group(1)
            for size in range(min(len(token), 6), 2, -1):
                tail = token[-size:]
                candidate = process.extractOne(tail, [r for r in self.roads if len(r) == size],
                                               scorer=Hamming.distance, score_cutoff=1)
                if candidate and (size > 3 or candidate[0][:2] == tail[:2]):
                    return candidate[0], norm[m.end():]
        return None, norm

    def _fuzzy_community(self, norm: str) -> str | None:
        # Only a name of 3+ characters with at most one of them missing from the text can be taken
        # (the check below): without such a name the fuzzy search cannot find one, skip it.
        if not any(len(name) >= 3 and sum(1 for ch in name if ch in norm) >= len(name) - 1
                   for name in self.communities):
            return None
        best = process.extractOne(norm, list(self.communities), scorer=fuzz.partial_ratio, score_cutoff=80)
        if best and len(best[0]) >= 3:
            # partial_ratio on short names is lenient: require most characters in order
            hits = sum(1 for ch in best[0] if ch in norm)
            if hits >= len(best[0]) - 1:
                return best[0]
        return None

    # ------------------------------------------------------------ locating
    def cell_of(self, lat: float, lon: float) -> str:
        return str(h3.latlng_to_cell(lat, lon, self.resolution))

    def streets_near(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Codes of the streets whose grid cells come within ``radius_m`` of the point (its own included).
        Generous by a cell's radius: a cell counts when its centre is within ``radius_m`` plus that."""
        cell = self.cell_of(lat, lon)
        edge = float(h3.average_hexagon_edge_length(self.resolution, unit="m"))
        rings = int(math.ceil(radius_m / edge)) + 1
        codes = []
        for code, centre in self._streets_around(cell, rings):
            if code not in codes and distance_m((lat, lon), centre) <= radius_m + edge:
                codes.append(code)
        return codes

    def _streets_around(self, cell: str, rings: int) -> list[tuple[str, LatLon]]:
        """(street code, cell centre) of the district's cells within ``rings`` of a cell, in grid_disk order;
        cached (every new case asks, and the grid does not change)."""
        cache: dict[tuple[str, int], list[tuple[str, LatLon]]] = self.__dict__.setdefault("_around", {})
        around = cache.get((cell, rings))
        if around is None:
            if len(cache) > 65536:
                cache.clear()
            around = cache[(cell, rings)] = [
                (self.streets[name].code, h3.cell_to_latlng(near))
                for near in h3.grid_disk(cell, rings) if (name := self.cell_street.get(near)) is not None]
        return around

    def at_point(self, lat: float, lon: float) -> tuple[Location | None, str | None]:
        cell = self.cell_of(lat, lon)
        street_name = self.cell_street.get(cell)
        if street_name is None:
            return None, f"coordinates {lat:.5f},{lon:.5f} are outside {self.district}"
        street = self.streets[street_name]
        context = [CTX_HERITAGE] if cell in self.heritage_cells else []
        return Location(lat=lat, lon=lon, cell=cell, community=self.cell_community.get(cell), street=street.name,
                        street_code=street.code, district=self.district, context=context), None

    def at_address(self, address: str) -> tuple[Location | None, str | None]:
        loc, reason = self._located(address)
        return (_copy_location(loc) if loc is not None else None), reason

    @cached_property
    def _located(self) -> Callable[[str], tuple[Location | None, str | None]]:
        return lru_cache(maxsize=ADDRESS_CACHE_SIZE)(self._at_address)

    def _at_address(self, address: str, parse: Callable[[str], ParsedAddress] | None = None
                    ) -> tuple[Location | None, str | None]:
        parsed = (parse or self._parsed)(address)
        if not parsed:
            return None, f"address {address!r} names no known road or community of {self.district}"
        if parsed.key and parsed.key in self.addresses:
            entry = self.addresses[parsed.key]
            loc, reason = self.at_point(*entry.at)
            if loc is None:
                return None, reason
            loc.address = entry.address
            if entry.community:
                loc.community = entry.community
                loc.street = self.communities[entry.community].street
                loc.street_code = self.streets[loc.street].code
            flag = {"compound": CTX_COMPOUND, "street_front": CTX_STREET_FRONT}.get(entry.kind)
            if flag:
                loc.context.append(flag)
            return loc, None
        if parsed.road and parsed.number is not None:
            lat, lon = self.roads[parsed.road].point(parsed.number)
            loc, reason = self.at_point(lat, lon)
            if loc is None:
                return None, reason
            loc.address = parsed.key
            if parsed.unit == "弄":  # a Shanghai lane number is a residential compound
                loc.context.append(CTX_COMPOUND)
            return loc, None
        if parsed.community:
            community = self.communities[parsed.community]
            loc, reason = self.at_point(*community.center)
            if loc is None:
                return None, reason
            loc.community, loc.street = community.name, community.street
            loc.street_code = self.streets[community.street].code
            loc.address = community.name
            loc.context.append(CTX_COMPOUND)
            return loc, None
        return None, f"address {address!r}: road {parsed.road} without a door number"

    def locate(self, lat: float | None, lon: float | None, address: str | None,
               text: str | None = None) -> tuple[Location | None, str | None]:
        """Address first (it carries the compound/street-front context), then coordinates, then the text."""
        reasons: list[str] = []
        if address and address.strip():
            loc, reason = self.at_address(address)
            if loc is not None:
                return loc, None
            reasons.append(reason or "address not found")
        if lat is not None and lon is not None:
            loc, reason = self.at_point(lat, lon)
            if loc is not None:
                return loc, None
            reasons.append(reason or "coordinates not in the grid")
        if text and text.strip():
            # free texts rarely repeat: kept out of the address caches, where they would only push addresses out
            loc, reason = self._at_address(text, self._parse_address)
            if loc is not None:
                return loc, None
            reasons.append("the text names no known address or community")
        if not reasons:
            return None, "no address, coordinates or place in the text"
        return None, "; ".join(reasons)

    def component_at(self, kind: str, location: Location | None) -> Component | None:
        """The registered component of `kind` at that address, else the nearest within COMPONENT_RADIUS_M."""
        if location is None:
            return None
        candidates = [c for c in self.components if c.kind == kind]
        if location.address:
            key = self.parse_address(location.address).key or location.address
            for c in candidates:
                if c.address == key:
                    return c
        if location.lat is None or location.lon is None:
            return None
        here = (location.lat, location.lon)
        best = min(candidates, key=lambda c: distance_m(c.at, here), default=None)
        if best and distance_m(best.at, here) <= COMPONENT_RADIUS_M:
            return best
        return None


def _department_instances(data: _CityIn, raw: Any, path: Path, departments: dict[str, Department]
                          ) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """Name every street's (community's) instance of each department kind; errors name the line."""
    instances: dict[tuple[str, str], str] = {}
    unit_kind: dict[str, str] = {}

    def claim(unit: str, kind: str, line: int | None, where: str) -> None:
        if unit in departments:
            raise DataError(path, line, where, f"instance name {unit!r} is a department kind's name")
        if unit_kind.setdefault(unit, kind) != kind:
            raise DataError(path, line, where, f"instance {unit!r} already belongs to {unit_kind[unit]}")

    for i, d in enumerate(data.departments):
        line = raw["departments"].item_lines[i]
        if d.instance is None:
            continue
        if d.scope == "district":
            raise DataError(path, line, f"departments[{i}].instance", "a district-wide department has no instances")
        allowed = INSTANCE_FIELDS[d.scope]
        used = _PLACEHOLDER.findall(d.instance)
        bad = [u for u in used if u not in allowed]
        if bad or not used:
            raise DataError(path, line, f"departments[{i}].instance",
                            f"{d.instance!r}: use {', '.join('{' + a + '}' for a in allowed)} (got {used or 'none'})")
    for i, s in enumerate(data.streets):   # the directory's names first, so a street's own name that
        line = raw["streets"].item_lines[i]  # clashes with them is reported on that street's line
        for kind, department in departments.items():
            if department.scope == "street" and department.instance and kind not in s.departments:
                unit = department.instance.format(street=s.name, street_short=street_short(s.name))
                claim(unit, kind, line, f"streets[{i}]")
                instances[(kind, s.name)] = unit
    for i, s in enumerate(data.streets):
        line = raw["streets"].item_lines[i]
        for kind, unit in s.departments.items():
            listed = departments.get(kind)
            if listed is None or listed.scope != "street":
                raise DataError(path, line, f"streets[{i}].departments.{kind}",
                                f"{kind!r} is not a street-scoped department of the directory")
            claim(unit, kind, line, f"streets[{i}].departments.{kind}")
            instances[(kind, s.name)] = unit
    for i, c in enumerate(data.communities):
        line = raw["communities"].item_lines[i]
        for kind, department in departments.items():
            if department.scope == "community" and department.instance:
                unit = department.instance.format(community=c.name, street=c.street,
                                                  street_short=street_short(c.street))
                claim(unit, kind, line, f"communities[{i}]")
                instances[(kind, c.name)] = unit
    return instances, unit_kind
