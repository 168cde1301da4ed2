"""Avro single-object encoding (marker C3 01, 8-byte little-endian CRC-64-AVRO fingerprint,
binary body) with the schemas in ``schemas/``: every record names its own schema, no registry.

JSON is accepted at the edges and validated against the same schemas.
"""
from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from streams.core import times
from streams.settings import package_data

MAGIC = b"\xc3\x01"
SCHEMAS_DIR = package_data("schemas", "schemas")  # top-level schemas/, packaged as streams/schemas/ in the wheel

# Fields carrying ISO-8601 timestamps in the raw contracts: checked beyond the Avro type.
OPEN311_MAX_DESCRIPTION = 4000  # GeoReport v2: "free form text limited to 4,000 characters"
ISO_FIELDS = {"received_at", "reported_at", "requested_at", "ts"}


class DecodeError(ValueError):
    """A record that cannot be read or does not fit its schema; the message says why."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the parsing canonical form

    @cached_property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.parsed["fields"]]

    @cached_property
    def field_set(self) -> frozenset[str]:
        return frozenset(self.field_names)

    @cached_property
    def json_plan(self) -> list[tuple[str, bool, Any, bool, Callable[[Any], bool] | None]]:
        """Per field, for from_json: (name, has a default, the default, an int stands for a double, type check)."""
        return [(f["name"], "default" in f, f.get("default"), _accepts(f["type"], "double"), _type_check(f["type"]))
                for f in self.parsed["fields"]]

    @cached_property
    def type_checks(self) -> list[tuple[str, Callable[[Any], bool]]] | None:
        """Plain-Python checks of each field's type, or None if a field's type has none. Each accepts a
        subset of what fastavro's validation accepts, so a record passing them all is valid without it
        (fastavro builds an error message for every union branch a value misses: most of its cost)."""
        checks = [(f["name"], _type_check(f["type"])) for f in self.parsed["fields"]]
        if any(check is None for _, check in checks):
            return None
        return checks  # type: ignore[return-value]


class SchemaRegistry:
    """The schemas shipped in ``schemas/``, by file stem and by fingerprint."""

    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        self.by_name: dict[str, Schema] = {}
        self.by_fingerprint: dict[bytes, Schema] = {}
        for path in sorted(directory.glob("*.avsc")):
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed = fastavro.parse_schema(raw)
            fp = int(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"), 16)
            schema = Schema(path.stem, parsed, struct.pack("<Q", fp))
            self.by_name[path.stem] = schema
            self.by_fingerprint[schema.fingerprint] = schema
        if not self.by_name:
            raise FileNotFoundError(f"no .avsc schemas in {directory}")

    def __getitem__(self, name: str) -> Schema:
        return self.by_name[name]

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema = self.by_name[name]
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        fastavro.schemaless_writer(buf, schema.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode single-object Avro, or JSON validated against ``expected``. Returns (schema name, record)."""
        if data[:2] == MAGIC:
            schema = self.by_fingerprint.get(bytes(data[2:10]))
            if schema is None:
                raise DecodeError(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
            if expected is not None and schema.name != expected:
                raise DecodeError(f"schema {schema.name} where {expected} was expected")
            try:
                record = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)
            except Exception as exc:
                raise DecodeError(f"corrupt Avro body for {schema.name}: {exc}") from exc
            # Decoded against a record schema (every schema in schemas/ is one): fastavro returns a dict.
            return schema.name, cast(dict[str, Any], record)
        if expected is None:
            raise DecodeError("not single-object Avro and no schema expected for JSON")
        return expected, self.from_json(expected, data)

    def from_json(self, name: str, data: bytes | str | dict[str, Any]) -> dict[str, Any]:
        """Parse and validate a JSON record; fills optional fields with null; errors name the field."""
        schema = self.by_name[name]
        if isinstance(data, dict):
            obj = data
        else:
            try:
                obj = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DecodeError(f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DecodeError("JSON record must be an object")
        unknown = obj.keys() - schema.field_set
        record: dict[str, Any] = {}
        typed = True  # every value passed its plain-Python type check (then fastavro need not look)
        for fname, has_default, default, to_double, check in schema.json_plan:
            if fname in obj:
                value = obj[fname]
                # JSON has no int/float distinction: let 31 stand for 31.0
                if to_double and type(value) is int:
                    value = float(value)
                record[fname] = value
                if typed and (check is None or not check(value)):
                    typed = False
            elif has_default:
                record[fname] = default
                if typed and (check is None or not check(default)):
                    typed = False
            else:
                raise DecodeError(f"missing required field '{fname}'")
        if unknown:
            raise DecodeError(f"unknown field(s) {sorted(unknown)}")
        if not typed:
            try:
                validate(record, schema.parsed, raise_errors=True)
            except Exception as exc:  # fastavro's ValidationError lists field paths
                raise DecodeError(f"schema {name}: {exc}") from exc
        check_semantics(name, record)
        return record


_INT_RANGE = (-(2 ** 31), 2 ** 31 - 1)
_LONG_RANGE = (-(2 ** 63), 2 ** 63 - 1)


def _type_check(avro_type: Any) -> Callable[[Any], bool] | None:
    """A check accepting a subset of what fastavro's validate accepts for ``avro_type`` (None: no such check)."""
    if isinstance(avro_type, list):
        branches = [_type_check(t) for t in avro_type if t != "null"]
        if any(b is None for b in branches):
            return None
        if len(branches) == 1:  # the usual optional field ["null", T]
            inner = branches[0]
            if "null" in avro_type:
                return lambda value: value is None or inner(value)  # type: ignore[misc]
            return inner
        nullable = "null" in avro_type
        return lambda value: (nullable and value is None) or any(b(value) for b in branches)  # type: ignore[misc]
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("array", "map"):
            # `item` is assigned once, so mypy keeps the None test's narrowing inside the closures
            item = _type_check(avro_type["items" if kind == "array" else "values"])
            if item is None:
                return None
            if kind == "array":
                return lambda value: type(value) is list and all(item(v) for v in value)
            return lambda value: type(value) is dict and all(type(k) is str and item(v) for k, v in value.items())
        return _type_check(kind) if isinstance(kind, str) and len(avro_type) == 1 else None
    if avro_type == "null":
        return lambda value: value is None
    if avro_type == "boolean":
        return lambda value: type(value) is bool
    if avro_type == "string":
        return lambda value: type(value) is str
    if avro_type in ("int", "long"):
        low, high = _INT_RANGE if avro_type == "int" else _LONG_RANGE
        return lambda value: type(value) is int and low <= value <= high
    if avro_type in ("float", "double"):
        return lambda value: type(value) is float or type(value) is int
    return None


def _accepts(avro_type: Any, primitive: str) -> bool:
    if isinstance(avro_type, list):
        return primitive in avro_type
    return avro_type == primitive


def parse_iso(value: str) -> datetime:
    try:
        return times.parse_iso(value)
    except times.BadTimestamp as exc:
        raise DecodeError(str(exc)) from exc


def iso_to_ms(value: str) -> int:
    return int(parse_iso(value).timestamp() * 1000)


def check_semantics(name: str, record: dict[str, Any]) -> None:
    """Checks the Avro types cannot express. Raises DecodeError naming the field."""
    for key in ISO_FIELDS & record.keys():
        if isinstance(record[key], str):
            parse_iso(record[key])
    if name == "hotline_call" and record["line"] not in ("12345", "12319"):
        raise DecodeError(f"field 'line' must be \"12345\" or \"12319\", got {record['line']!r}")
    if name == "field_report" and record["reporter_kind"] not in ("inspector", "station", "committee"):
        raise DecodeError("field 'reporter_kind' must be inspector, station or committee, "
                          f"got {record['reporter_kind']!r}")
    if name == "camera_alert" and not 0.0 <= record["confidence"] <= 1.0:
        raise DecodeError(f"field 'confidence' must be within 0..1, got {record['confidence']}")
    if name == "registry_change" and record["kind"] not in ("housing_contract", "business_scope"):
        raise DecodeError(f"field 'kind' must be housing_contract or business_scope, got {record['kind']!r}")
    if name == "case_action":
        if record.get("action") == "from_triage":
            if not record.get("triage_id"):
                raise DecodeError("a from_triage action needs 'triage_id'")
        elif not record.get("case_id") and not record.get("source_id"):
            raise DecodeError("a case action needs 'case_id' or 'source_id'")
        if record["actor_kind"] not in ("department", "center", "station", "committee", "inspector"):
            raise DecodeError(f"field 'actor_kind' not allowed: {record['actor_kind']!r}")
    if name == "open311_request":
        if (record["lat"] is None) != (record["lon"] is None):
            raise DecodeError("fields 'lat' and 'lon' go together: give both or neither")
        if record["lat"] is None and not record["address_string"] and not record["address_id"]:
            raise DecodeError("an Open311 request needs a location: 'lat' and 'lon', 'address_string' or 'address_id'")
        if record["description"] is not None and len(record["description"]) > OPEN311_MAX_DESCRIPTION:
            raise DecodeError(f"field 'description' is longer than {OPEN311_MAX_DESCRIPTION} characters")
    for lat_key, lon_key in (("lat", "lon"),):
        lat, lon = record.get(lat_key), record.get(lon_key)
        if lat is not None and not -90 <= lat <= 90:
            raise DecodeError(f"field 'lat' out of range: {lat}")
        if lon is not None and not -180 <= lon <= 180:
            raise DecodeError(f"field 'lon' out of range: {lon}")


_REGISTRY: SchemaRegistry | None = None


def registry() -> SchemaRegistry:
    """The shipped schemas, loaded once per process (they are read-only data)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = SchemaRegistry()
    return _REGISTRY
