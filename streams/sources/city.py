"""A simulated city at scale: the sample city's grid with a device table of any size.

``streams city generate --devices 100000 --out DIR`` writes a city data directory (the sample city's
``city.yaml`` and ``devices.yaml`` plus ``devices.csv`` or ``devices.parquet`` with the generated devices);
point the worker at it with ``CITYGRID_CITY_DIR=DIR``. Deterministic for a seed.
"""
from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from typing import Any

import h3

from streams.core.devices.registry import METRIC_TILT, METRIC_VIBRATION, TABLE_COLUMNS
from streams.core.knowledge.geo import City

# The mix of a residential district: mostly lifts with an e-bike detector, building sensors, some cameras.
KIND_WEIGHTS = (("lift", 0.6), ("sensor", 0.3), ("camera", 0.1))
CLASSES = ("一类", "二类", "三类", "四类")


def generate_devices(city: City, count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` devices on random cells of the district, one row per device (columns: TABLE_COLUMNS)."""
    rng = random.Random(seed)
    cells = sorted(city.cell_street)
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    rows: list[dict[str, Any]] = []
    for i in range(count):
        cell = rng.choice(cells)
        lat, lon = h3.cell_to_latlng(cell)
        street = city.cell_street[cell]
        kind = rng.choices(kinds, weights)[0]
        building = f"{street}{1 + i // 40}号楼"
        row: dict[str, Any] = {"id": f"{kind[:3].upper()}-{i:06d}", "kind": kind, "building": building,
                               "address": "", "lat": round(lat, 6), "lon": round(lon, 6), "protection_class": "",
                               "metrics": "", "area": ""}
        if kind == "sensor":
            row["protection_class"] = rng.choice(CLASSES)
            row["metrics"] = rng.choice([METRIC_VIBRATION, METRIC_TILT, f"{METRIC_VIBRATION}|{METRIC_TILT}"])
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    """devices.csv or devices.parquet (by the suffix)."""
    present = {key for row in rows for key in row}
    columns = [c for c in TABLE_COLUMNS if c in present] or list(TABLE_COLUMNS)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [None if r.get(c, "") == "" else str(r[c]) for r in rows] for c in columns})
        pq.write_table(table, path)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_city(out: Path, count: int, seed: int = 1, fmt: str = "csv", source: Path | None = None) -> Path:
    """A city data directory: ``source`` (default: the packaged sample city) plus ``count`` generated devices.
    Returns the device table's path."""
    from streams.core.knowledge.knowledge import DATA_DIR

    source = source or DATA_DIR / "city"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("city.yaml", "devices.yaml", "field.yaml"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    for stale in ("devices.csv", "devices.parquet"):
        (out / stale).unlink(missing_ok=True)
    city = City.load(out / "city.yaml")
    table = out / f"devices.{fmt}"
    write_table(generate_devices(city, count, seed), table)
    return table
