"""The device registry at city scale: heritage-building sensors, lift e-bike detectors, street cameras.

Two sources in the city data directory, both optional beside each other:

* ``devices.yaml`` — protection classes (thresholds and alarm-episode clearing per class) and hand-kept
  devices, each located by its address (a handful in the sample city);
* ``devices.csv`` or ``devices.parquet`` — the city's device table, one row per device (columns:
  :data:`TABLE_COLUMNS`), located by its coordinates. A city of 100,000 devices loads in well under a
  second: rows are validated and kept as compact tuples, and the `Sensor`/`Lift`/`Camera` objects the
  slow paths need (signals, the wall) are built on first use.

Every error names the file, the line (CSV) or row (Parquet) and the column.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from streams.core.knowledge.taxonomy import DataError, load_marked_yaml, validate_marked
from streams.core.model import Location

if TYPE_CHECKING:
    from streams.core.knowledge.geo import City

METRIC_VIBRATION = "vibration_mm_s"   # peak particle velocity, mm/s
METRIC_TILT = "tilt_permille"         # tilt, ‰
METRIC_EBIKE = "ebike_detected"       # 1 = an e-bike was seen entering the lift car
THRESHOLD_METRICS = (METRIC_VIBRATION, METRIC_TILT)
DEVICE_KINDS = ("sensor", "lift", "camera")
# An alarm episode closes once the value has stayed at or below clear_ratio × threshold for clear_seconds,
# unless the protection class (or the device) says otherwise.
DEFAULT_CLEAR_RATIO = 0.8
DEFAULT_CLEAR_SECONDS = 300

# Columns of devices.csv / devices.parquet. Empty cells mean "not given"; `metrics` lists a sensor's
# metrics separated by '|'; the threshold and clearing columns override the sensor's protection class.
TABLE_COLUMNS = ("id", "kind", "building", "address", "lat", "lon", "protection_class", "metrics", "area",
                 *THRESHOLD_METRICS, "clear_ratio", "clear_seconds")
REQUIRED_COLUMNS = ("id", "kind", "lat", "lon")
TABLE_FILES = ("devices.parquet", "devices.csv")


# ---------------------------------------------------------------- devices.yaml schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ThresholdsIn(_Strict):
    vibration_mm_s: float | None = Field(None, gt=0)
    tilt_permille: float | None = Field(None, gt=0)


class _ClassIn(_ThresholdsIn):
    clear_ratio: float = Field(DEFAULT_CLEAR_RATIO, gt=0, le=1)
    clear_seconds: int = Field(DEFAULT_CLEAR_SECONDS, ge=0)


class _DeviceThresholdsIn(_ThresholdsIn):
    clear_ratio: float | None = Field(None, gt=0, le=1)
    clear_seconds: int | None = Field(None, ge=0)


class _SensorIn(_Strict):
    id: str
    building: str
    address: str
    at: tuple[float, float]
    protection_class: str
    metrics: list[str] = Field(min_length=1)
    thresholds: _DeviceThresholdsIn | None = None


class _LiftIn(_Strict):
    id: str
    building: str
    address: str
    at: tuple[float, float]


class _CameraIn(_Strict):
    id: str
    area: str | None = None
    address: str
    at: tuple[float, float]


class _DevicesIn(_Strict):
    protection_classes: dict[str, _ClassIn] = Field(min_length=1)
    sensors: list[_SensorIn] = []
    lifts: list[_LiftIn] = []
    cameras: list[_CameraIn] = []


# ---------------------------------------------------------------- plain data
@dataclass(frozen=True)
class ProtectionClass:
    """A protection class 保护等级: thresholds per metric and how an alarm episode clears."""

    name: str
    thresholds: dict[str, float]
    clear_ratio: float
    clear_seconds: int


@dataclass(frozen=True, slots=True)
class AlarmLimits:
    """When one metric of one sensor alarms: an episode opens above ``threshold`` and closes after the
    value stayed at or below ``clear_level`` (a ratio of the threshold) for ``clear_ms``."""

    threshold: float
    clear_level: float
    clear_ms: int


@dataclass(frozen=True)
class Sensor:
    id: str
    building: str
    protection_class: str
    thresholds: dict[str, float]    # metric -> limit
    location: Location
    clear_ratio: float = DEFAULT_CLEAR_RATIO
    clear_seconds: int = DEFAULT_CLEAR_SECONDS

    def limits(self, metric: str) -> AlarmLimits:
        threshold = self.thresholds[metric]
        return AlarmLimits(threshold, threshold * self.clear_ratio, self.clear_seconds * 1000)


@dataclass(frozen=True)
class Lift:
    id: str
    building: str
    location: Location


@dataclass(frozen=True)
class Camera:
    id: str
    area: str | None
    location: Location


class _Row(NamedTuple):
    """One validated device, compact: what the hot path reads, and what builds its object on demand."""

    kind: str
    building: str
    address: str
    lat: float
    lon: float
    protection_class: str
    metrics: tuple[str, ...]
    area: str | None
    overrides: tuple[tuple[str, float], ...]   # (threshold metric | clear_ratio | clear_seconds, value)
    location: Location | None                 # located by address (devices.yaml); None: by coordinates


Device = TypeVar("Device", bound=Sensor | Lift | Camera)


class DeviceView(Mapping[str, Device], Generic[Device]):
    """The devices of one kind by id; objects are built on first access and kept."""

    def __init__(self, rows: dict[str, _Row], kind: str, build: Callable[[str, _Row], Device]) -> None:
        self._rows: dict[str, _Row] = rows
        self._kind: str = kind
        self._build = build
        self._ids = [device_id for device_id, row in rows.items() if row.kind == kind]
        self._built: dict[str, Device] = {}

    def __getitem__(self, device_id: str) -> Device:
        built = self._built.get(device_id)
        if built is None:
            row = self._rows.get(device_id)
            if row is None or row.kind != self._kind:
                raise KeyError(device_id)
            built = self._built[device_id] = self._build(device_id, row)
        return built

    def __contains__(self, device_id: object) -> bool:
        row = self._rows.get(device_id) if isinstance(device_id, str) else None
        return row is not None and row.kind == self._kind

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


class DeviceRegistry:
    """Every device of the city by id. ``kind`` and ``alarm_limits`` are the hot path of the IoT feed."""

    def __init__(self, rows: dict[str, _Row], protection_classes: dict[str, ProtectionClass], city: City) -> None:
        self.rows = rows
        self.classes = protection_classes
        self.city = city
        self.sensors: DeviceView[Sensor] = DeviceView(rows, "sensor", self._sensor)
        self.lifts: DeviceView[Lift] = DeviceView(rows, "lift", self._lift)
        self.cameras: DeviceView[Camera] = DeviceView(rows, "camera", self._camera)
        self._limits: dict[str, dict[str, AlarmLimits]] = {}

    # ------------------------------------------------------------ compatibility: classes as threshold maps
    @property
    def protection_classes(self) -> dict[str, dict[str, float]]:
        return {name: dict(c.thresholds) for name, c in self.classes.items()}

    def __len__(self) -> int:
        return len(self.rows)

    def kind(self, device_id: str) -> str | None:
        row = self.rows.get(device_id)
        return row.kind if row is not None else None

    def building(self, device_id: str) -> str:
        row = self.rows.get(device_id)
        return row.building if row is not None else ""

    def alarm_limits(self, device_id: str) -> dict[str, AlarmLimits]:
        """Metric -> limits of a sensor (empty for other devices), cached per device."""
        limits = self._limits.get(device_id)
        if limits is None:
            row = self.rows.get(device_id)
            if row is None or row.kind != "sensor":
                return {}
            thresholds, ratio, seconds = self._sensor_settings(row)
            limits = {m: AlarmLimits(t, t * ratio, seconds * 1000) for m, t in thresholds.items()}
            self._limits[device_id] = limits
        return limits

    def iter_sensor_metrics(self) -> Iterator[tuple[str, str, float, str]]:
        """(device id, metric, threshold, building) of every sensor metric, without building objects."""
        for device_id, row in self.rows.items():
            if row.kind == "sensor":
                for metric, threshold in self._sensor_settings(row)[0].items():
                    yield device_id, metric, threshold, row.building

    def iter_kind(self, kind: str) -> Iterator[tuple[str, str]]:
        """(device id, building) of every device of ``kind``."""
        for device_id, row in self.rows.items():
            if row.kind == kind:
                yield device_id, row.building

    def _sensor_settings(self, row: _Row) -> tuple[dict[str, float], float, int]:
        cls = self.classes[row.protection_class]
        overrides = dict(row.overrides)
        thresholds = {m: overrides.get(m, cls.thresholds.get(m, 0.0)) for m in row.metrics}
        ratio = overrides.get("clear_ratio", cls.clear_ratio)
        seconds = int(overrides.get("clear_seconds", cls.clear_seconds))
        return thresholds, ratio, seconds

    def _sensor(self, device_id: str, row: _Row) -> Sensor:
        thresholds, ratio, seconds = self._sensor_settings(row)
        return Sensor(device_id, row.building, row.protection_class, thresholds, self._location(row), ratio, seconds)

    def _lift(self, device_id: str, row: _Row) -> Lift:
        return Lift(device_id, row.building, self._location(row))

    def _camera(self, device_id: str, row: _Row) -> Camera:
        return Camera(device_id, row.area, self._location(row))

    def _location(self, row: _Row) -> Location:
        if row.location is not None:
            return row.location

        loc, _ = self.city.at_point(row.lat, row.lon)
        assert loc is not None, "checked when the table was loaded"
        loc.address = row.address or None
        return loc

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Path, city: City) -> DeviceRegistry:
        """``devices.yaml`` at ``path`` and, beside it, ``devices.parquet`` or ``devices.csv`` when present."""
        classes, rows = _load_yaml(path, city)
        for name in TABLE_FILES:
            table = path.parent / name
            if table.exists():
                load_table(table, city, classes, rows)
                break
        return cls(rows, classes, city)


def _load_yaml(path: Path, city: City) -> tuple[dict[str, ProtectionClass], dict[str, _Row]]:
    raw = load_marked_yaml(path)
    data = validate_marked(_DevicesIn, raw, path)
    classes = {name: ProtectionClass(name, {m: getattr(c, m) for m in THRESHOLD_METRICS if getattr(c, m) is not None},
                                     c.clear_ratio, c.clear_seconds)
               for name, c in data.protection_classes.items()}
    rows: dict[str, _Row] = {}

    def place(section: str, i: int, device_id: str, address: str, at: tuple[float, float]) -> Location:
        line = raw[section].item_lines[i]
        if device_id in rows:
            raise DataError(path, line, f"{section}[{i}].id", f"duplicate device id {device_id!r}")
        loc, reason = city.locate(at[0], at[1], address)
        if loc is None:
            raise DataError(path, line, f"{section}[{i}].address", reason or "cannot be located")
        # the device's own coordinates are more precise than an interpolated door number
        loc.lat, loc.lon = at
        return loc

    for i, s in enumerate(data.sensors):
        loc = place("sensors", i, s.id, s.address, s.at)
        line = raw["sensors"].item_lines[i]
        if s.protection_class not in classes:
            raise DataError(path, line, f"sensors[{i}].protection_class", f"unknown class {s.protection_class!r}")
        overrides = {k: float(v) for k, v in (s.thresholds.model_dump() if s.thresholds else {}).items()
                     if v is not None}
        for metric in s.metrics:
            if metric not in THRESHOLD_METRICS:
                raise DataError(path, line, f"sensors[{i}].metrics", f"unknown metric {metric!r}")
            if metric not in overrides and metric not in classes[s.protection_class].thresholds:
                raise DataError(path, line, f"sensors[{i}].thresholds", f"no threshold for {metric}")
        rows[s.id] = _Row("sensor", s.building, s.address, s.at[0], s.at[1], s.protection_class, tuple(s.metrics),
                          None, tuple(sorted(overrides.items())), loc)
    for i, lift in enumerate(data.lifts):
        loc = place("lifts", i, lift.id, lift.address, lift.at)
        rows[lift.id] = _Row("lift", lift.building, lift.address, lift.at[0], lift.at[1], "", (), None, (), loc)
    for i, c in enumerate(data.cameras):
        loc = place("cameras", i, c.id, c.address, c.at)
        rows[c.id] = _Row("camera", "", c.address, c.at[0], c.at[1], "", (), c.area, (), loc)
    return classes, rows


# ---------------------------------------------------------------- devices.csv / devices.parquet
def _table_columns(path: Path) -> tuple[dict[str, list[Any]], int, str]:
    """The table as columns (name -> values), its row count, and what a row number is called in errors."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return {name: table.column(name).to_pylist() for name in table.column_names}, table.num_rows, "row"
    try:   # Arrow's C++ CSV reader: ten times Python's csv module on a city's table
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    else:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        try:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=False,
                quoted_strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise DataError(path, None, "(table)", str(exc).splitlines()[0]) from exc
        return {name: table.column(name).to_pylist() for name in table.column_names}, table.num_rows, "line"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        body = list(reader)
    if any(len(r) != len(header) for r in body):
        line = next(i + 2 for i, r in enumerate(body) if len(r) != len(header))
        raise DataError(path, line, "(row)", f"{len(header)} columns expected")
    columns = [list(c) for c in zip(*body, strict=True)] if body else [[] for _ in header]
    return dict(zip(header, columns, strict=True)), len(body), "line"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def load_table(path: Path, city: City, classes: dict[str, ProtectionClass], rows: dict[str, _Row]) -> None:
    """Add the devices of a CSV or Parquet table to ``rows`` (validated; errors name line/row and column).
    Column-wise and with the hot checks inlined: 100,000 devices load in well under a second."""
    columns, count, unit = _table_columns(path)
    unknown = [c for c in columns if c not in TABLE_COLUMNS]
    if unknown:
        raise DataError(path, 1, unknown[0], f"unknown column (columns: {', '.join(TABLE_COLUMNS)})")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(path, 1, missing[0], "required column missing")
    blank: list[str] = [""] * count

    def text_column(name: str) -> list[str]:
        values = columns.get(name)
        if values is None:
            return blank
        return [v.strip() if isinstance(v, str) else _text(v) for v in values]

    ids, kinds, lats, lons = text_column("id"), text_column("kind"), columns["lat"], columns["lon"]
    buildings, addresses = text_column("building"), text_column("address")
    classes_col, metrics_col, areas = text_column("protection_class"), text_column("metrics"), text_column("area")
    extra = [(c, columns[c]) for c in (*THRESHOLD_METRICS, "clear_ratio", "clear_seconds") if c in columns]
    cell_of, cell_street = city.cell_of, city.cell_street
    seen_cells: dict[tuple[float, float], bool] = {}
    offset = 2 if unit == "line" else 1   # CSV: the header is line 1

    def fail(i: int, column: str, problem: str) -> DataError:
        number = i + offset
        return DataError(path, number, column, problem if unit == "line" else f"row {number}: {problem}")

    for i in range(count):
        device_id = ids[i]
        if not device_id:
            raise fail(i, "id", "empty device id")
        if device_id in rows:
            raise fail(i, "id", f"duplicate device id {device_id!r}")
        kind = kinds[i]
        if kind not in DEVICE_KINDS:
            raise fail(i, "kind", f"{kind!r} is not one of {', '.join(DEVICE_KINDS)}")
        try:
            lat, lon = float(lats[i]), float(lons[i])
        except (TypeError, ValueError):
            raise fail(i, "lat", f"coordinates {lats[i]!r}, {lons[i]!r} are not numbers") from None
        inside = seen_cells.get((lat, lon))
        if inside is None:
            inside = seen_cells[(lat, lon)] = (-90 <= lat <= 90 and -180 <= lon <= 180
                                               and cell_of(lat, lon) in cell_street)
        if not inside:
            raise fail(i, "lat", f"coordinates {lat:.5f},{lon:.5f} are outside {city.district}")
        protection_class = ""
        metrics: tuple[str, ...] = ()
        overrides: tuple[tuple[str, float], ...] = ()
        if kind == "sensor":
            protection_class = classes_col[i]
            if protection_class not in classes:
                raise fail(i, "protection_class", f"unknown class {protection_class!r}")
            metrics = tuple(m.strip() for m in metrics_col[i].split("|") if m.strip())
            if not metrics:
                raise fail(i, "metrics", "a sensor needs at least one metric")
            given: dict[str, float] = {}
            for column, values in extra:
                text = _text(values[i])
                if not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    raise fail(i, column, f"{text!r} is not a number") from None
                if value < 0 or (column != "clear_seconds" and value == 0) or (column == "clear_ratio" and value > 1):
                    raise fail(i, column, f"{value} is out of range")
                given[column] = value
            for metric in metrics:
                if metric not in THRESHOLD_METRICS:
                    raise fail(i, "metrics", f"unknown metric {metric!r}")
                if metric not in given and metric not in classes[protection_class].thresholds:
                    raise fail(i, metric, f"no threshold for {metric}")
            overrides = tuple(sorted(given.items()))
        rows[device_id] = _Row(kind, buildings[i], addresses[i], lat, lon, protection_class, metrics,
                               areas[i] or None, overrides, None)
