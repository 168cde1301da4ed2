"""The device registry at city scale: devices.yaml plus a CSV or Parquet table, validated, errors with file,
line (row) and column; objects built on demand."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from streams.core.devices.registry import AlarmLimits, DeviceRegistry
from streams.core.knowledge.geo import City
from streams.core.knowledge.knowledge import DATA_DIR, Knowledge
from streams.core.knowledge.taxonomy import DataError
from streams.sources.city import generate_devices, write_city, write_table

SAMPLE = DATA_DIR / "city"


@pytest.fixture(scope="module")
def city() -> City:
    return City.load(SAMPLE / "city.yaml")


def city_dir(tmp_path: Path, rows: list[dict[str, Any]], fmt: str = "csv") -> Path:
    out = tmp_path / f"city-{fmt}"
    out.mkdir(exist_ok=True)
    for name in ("city.yaml", "devices.yaml", "field.yaml"):
        shutil.copyfile(SAMPLE / name, out / name)
    write_table(rows, out / f"devices.{fmt}")
    return out


def load(path: Path, city: City) -> DeviceRegistry:
    return DeviceRegistry.load(path / "devices.yaml", city)


def test_a_generated_city_loads_from_csv_and_parquet_alike(tmp_path: Path, city: City) -> None:
    rows = generate_devices(city, 500, seed=3)
    by_csv = load(city_dir(tmp_path, rows, "csv"), city)
    by_parquet = load(city_dir(tmp_path, rows, "parquet"), city)
    assert len(by_csv) == len(by_parquet) == 500 + 27   # and the sample city's hand-kept devices
    assert by_csv.rows == by_parquet.rows
    kinds = {r["kind"] for r in rows}
    assert kinds == {"sensor", "lift", "camera"}
    sensor = next(r["id"] for r in rows if r["kind"] == "sensor")
    assert by_csv.kind(sensor) == "sensor" and by_csv.sensors[sensor].location.street   # located on demand
    assert set(by_csv.alarm_limits(sensor)) == set(rows[[r["id"] for r in rows].index(sensor)]["metrics"].split("|"))


def test_overrides_and_class_clearing(tmp_path: Path, city: City) -> None:
    rows = [{"id": "S-1", "kind": "sensor", "lat": 31.2053, "lon": 121.4385, "protection_class": "一类",
             "metrics": "vibration_mm_s|tilt_permille", "vibration_mm_s": 1.2, "clear_seconds": 60},
            {"id": "L-1", "kind": "lift", "lat": 31.1725, "lon": 121.4062, "building": "怡桂苑1号楼"}]
    registry = load(city_dir(tmp_path, rows), city)
    limits = registry.alarm_limits("S-1")
    assert limits["vibration_mm_s"] == AlarmLimits(1.2, 1.2 * 0.7, 60_000)     # 一类 clears at 0.7 x
    assert limits["tilt_permille"] == AlarmLimits(2.0, 2.0 * 0.7, 60_000)
    assert registry.lifts["L-1"].building == "怡桂苑1号楼" and "L-1" not in registry.sensors
    assert registry.alarm_limits("L-1") == {}


@pytest.mark.parametrize("change,column,problem", [
    ({"kind": "drone"}, "kind", "not one of"),
    ({"lat": 39.9, "lon": 116.4}, "lat", "outside 徐汇区"),
    ({"lat": "north"}, "lat", "not numbers"),
    ({"protection_class": "五类"}, "protection_class", "unknown class"),
    ({"metrics": "humidity"}, "metrics", "unknown metric"),
    ({"clear_ratio": 1.5}, "clear_ratio", "out of range"),
    ({"id": "HB-WK-V01"}, "id", "duplicate device id"),   # already in devices.yaml
])
def test_errors_name_the_file_line_and_column(tmp_path: Path, city: City, change: dict[str, Any], column: str,
                                              problem: str) -> None:
    good = {"id": "S-1", "kind": "sensor", "lat": 31.2053, "lon": 121.4385, "protection_class": "二类",
            "metrics": "vibration_mm_s", "clear_ratio": "", "vibration_mm_s": ""}
    rows = [good, {**good, "id": "S-2", **change}]
    with pytest.raises(DataError) as err:
        load(city_dir(tmp_path, rows), city)
    assert err.value.field == column and problem in err.value.problem
    assert err.value.path.endswith("devices.csv") and err.value.line == 3   # header, S-1, then S-2


def test_an_unknown_column_is_refused(tmp_path: Path, city: City) -> None:
    out = city_dir(tmp_path, [{"id": "L-1", "kind": "lift", "lat": 31.1725, "lon": 121.4062}])
    with (out / "devices.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["id", "kind", "lat", "lon", "colour"], ["L-1", "lift", "31.1725", "121.4062", "red"]])
    with pytest.raises(DataError, match="colour"):
        load(out, city)


def test_the_knowledge_loads_a_city_dir_with_its_table(tmp_path: Path) -> None:
    write_city(tmp_path / "big", 2000, seed=2)
    kb = Knowledge.load(city_dir=tmp_path / "big")
    assert len(kb.devices) == 2027 and kb.field.stations   # field.yaml travels with the generated city
    assert len(kb.sample_devices()) >= 2000 * 0.6
