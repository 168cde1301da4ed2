"""Avro single-object encoding (marker C3 01, 8-byte little-endian CRC-64-AVRO fingerprint,
binary body) with the schemas in ``schemas/``: every record names its own schema, no registry.

Every version of a schema that was ever released stays readable: ``schemas/history/<name>/<fingerprint>.avsc``
holds them all (the current one included; ``streams schemas freeze`` adds it, and a test fails when a
current schema has no history entry). A record written with an older version is decoded with that
version as the writer schema and resolved to the current one (Avro schema resolution: a field added
with a default gets the default). Readers upgrade first: a record from a version newer than the
reader's is unknown to it and dead-lettered.

JSON is accepted at the edges and validated against the same schemas. Raw feeds (``RAW_SCHEMAS``)
then pass the same input rules (streams.bus.rules) whichever encoding they came in.
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
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from streams.bus.rules import DEFAULT_RULES, ISO_FIELDS, OPEN311_MAX_DESCRIPTION, InputRules, RuleViolation, check_input
from streams.bus.rules import check_semantics as _check_semantics
from streams.bus.topics import RAW_SCHEMAS
from streams.core import times
from streams.settings import package_data

MAGIC = b"\xc3\x01"
SCHEMAS_DIR = package_data("schemas", "schemas")  # top-level schemas/, packaged as streams/schemas/ in the wheel
HISTORY = "history"
RAW_SCHEMA_NAMES = frozenset(RAW_SCHEMAS.values())

__all__ = ["ISO_FIELDS", "MAGIC", "OPEN311_MAX_DESCRIPTION", "DecodeError", "Schema", "SchemaRegistry",
           "check_semantics", "registry"]


class DecodeError(ValueError):
    """A record that cannot be read or does not fit its schema or the input rules; the message says why."""


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


@dataclass(frozen=True)
class WriterSchema:
    """A released version of a schema: records written with it are read into ``reader`` (the current one)."""

    reader: Schema
    parsed: Any
    fingerprint: bytes

    @property
    def current(self) -> bool:
        return self.fingerprint == self.reader.fingerprint


def schema_fingerprint(raw: Any) -> bytes:
    """The 8 fingerprint bytes of single-object encoding for a schema (JSON, as loaded)."""
    return struct.pack("<Q", int(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"), 16))


def fingerprint_hex(fp: bytes) -> str:
    """The conventional (big-endian) hex form, as used in history file names."""
    return f"{struct.unpack('<Q', fp)[0]:016x}"


def history_path(directory: Path, name: str, fp: bytes) -> Path:
    return directory / HISTORY / name / f"{fingerprint_hex(fp)}.avsc"


class SchemaRegistry:
    """The schemas shipped in ``schemas/`` by file stem and by fingerprint, with every released version."""

    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        self.directory = directory
        self.by_name: dict[str, Schema] = {}
        self.by_fingerprint: dict[bytes, Schema] = {}  # current versions only
        self.writers: dict[bytes, WriterSchema] = {}   # every readable version, current included
        for path in sorted(directory.glob("*.avsc")):
            raw = json.loads(path.read_text(encoding="utf-8"))
            schema = Schema(path.stem, fastavro.parse_schema(raw), schema_fingerprint(raw))
            self.by_name[path.stem] = schema
            self.by_fingerprint[schema.fingerprint] = schema
            self.writers[schema.fingerprint] = WriterSchema(schema, schema.parsed, schema.fingerprint)
        if not self.by_name:
            raise FileNotFoundError(f"no .avsc schemas in {directory}")
        for path in sorted((directory / HISTORY).glob("*/*.avsc")):
            name = path.parent.name
            if name not in self.by_name:
                continue  # a retired schema: nothing reads it any more
            raw = json.loads(path.read_text(encoding="utf-8"))
            fp = schema_fingerprint(raw)
            if fp not in self.writers:
                self.writers[fp] = WriterSchema(self.by_name[name], fastavro.parse_schema(raw), fp)

    def __getitem__(self, name: str) -> Schema:
        return self.by_name[name]

    def missing_history(self) -> list[str]:
        """Current schemas without their history entry (released without being frozen)."""
        return [name for name, schema in self.by_name.items()
                if not history_path(self.directory, name, schema.fingerprint).exists()]

    def freeze(self) -> list[Path]:
        """Write the history entry of every current schema that lacks one; returns the files written."""
        written = []
        for name in self.missing_history():
            schema = self.by_name[name]
            target = history_path(self.directory, name, schema.fingerprint)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((self.directory / f"{name}.avsc").read_text(encoding="utf-8"), encoding="utf-8")
            written.append(target)
        return written

    def unreadable_history(self, samples: int = 20) -> list[str]:
        """Released versions whose records the current schema cannot read (Avro schema resolution
        refuses them): a change that breaks compatibility. Checked on generated sample records."""
        from fastavro.utils import generate_many

        problems = []
        for fp, writer in self.writers.items():
            if writer.current:
                continue
            for sample in generate_many(writer.parsed, samples):
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, writer.parsed, sample)
                buf.seek(0)
                try:
                    fastavro.schemaless_reader(buf, writer.parsed, writer.reader.parsed)
                except Exception as exc:
                    problems.append(f"{writer.reader.name} version {fingerprint_hex(fp)}: {exc}")
                    break
        return problems

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema = self.by_name[name]
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        fastavro.schemaless_writer(buf, schema.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes | None, expected: str | None = None, rules: InputRules | None = None,
               ref_ms: int | None = None) -> tuple[str, dict[str, Any]]:
        """Decode single-object Avro (any released version), or JSON validated against ``expected``.

        A raw feed's record then passes the input rules (``rules``, default: the settings' defaults);
        the event-time window is checked only when ``ref_ms`` (the record's Kafka timestamp) is given.
        Returns (schema name, record); raises DecodeError with the reason.
        """
        if data is None:
            raise DecodeError("null value (a tombstone): the pipeline's topics carry no deletes")
        if data[:2] == MAGIC:
            name, record = self._decode_avro(bytes(data), expected)
        elif expected is None:
            raise DecodeError("not single-object Avro and no schema expected for JSON")
        else:
            return expected, self.from_json(expected, data, rules, ref_ms)
        if name in RAW_SCHEMA_NAMES:
            _check(name, record, rules or DEFAULT_RULES, ref_ms)
        return name, record

    def _decode_avro(self, data: bytes, expected: str | None) -> tuple[str, dict[str, Any]]:
        writer = self.writers.get(data[2:10])
        if writer is None:
            fp = fingerprint_hex(data[2:10].ljust(8, bytes(1)))
            raise DecodeError(f"unknown schema fingerprint {fp}: "
                              "not a released version of any schema this worker knows")
        name = writer.reader.name
        if expected is not None and name != expected:
            raise DecodeError(f"schema {name} where {expected} was expected")
        body = io.BytesIO(data[10:])
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, None if writer.current else writer.reader.parsed)
        except Exception as exc:
            raise DecodeError(f"corrupt Avro body for {name}: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(data) - 10:
            raise DecodeError(f"corrupt Avro body for {name}: {len(data) - 10 - body.tell()} trailing bytes")
        if not isinstance(record, dict):
            raise DecodeError(f"corrupt Avro body for {name}: not a record")
        return name, record

    def from_json(self, name: str, data: bytes | str | dict[str, Any], rules: InputRules | None = None,
                  ref_ms: int | None = None) -> dict[str, Any]:
        """Parse and validate a JSON record; fills optional fields with null; errors name the field.

        Strict JSON (orjson): no NaN/Infinity, no number beyond the double range, valid UTF-8 without
        lone surrogates, nesting at most 1024 deep. A raw feed's record then passes the input rules."""
        schema = self.by_name[name]
        if isinstance(data, dict):
            obj = data
        else:
            try:
                obj = orjson.loads(data)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise DecodeError(f"not JSON: {exc}") from None
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
                    try:
                        value = float(value)
                    except OverflowError:
                        raise DecodeError(f"field '{fname}' is a number beyond the double range") from None
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
            raise DecodeError(f"unknown field(s) {sorted(unknown)!r}"[:500])
        if not typed:
            try:
                validate(record, schema.parsed, raise_errors=True)
            except Exception as exc:  # fastavro's ValidationError lists field paths
                raise DecodeError(f"schema {name}: {exc}"[:1000]) from None
        if name in RAW_SCHEMA_NAMES:
            _check(name, record, rules or DEFAULT_RULES, ref_ms)
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


def _check(name: str, record: dict[str, Any], rules: InputRules, ref_ms: int | None) -> None:
    try:
        check_input(name, record, rules, ref_ms)
    except RuleViolation as exc:
        raise DecodeError(str(exc)) from None


def check_semantics(name: str, record: dict[str, Any]) -> None:
    """Checks the Avro types cannot express (streams.bus.rules). Raises DecodeError naming the field."""
    try:
        _check_semantics(name, record)
    except RuleViolation as exc:
        raise DecodeError(str(exc)) from None


_REGISTRY: SchemaRegistry | None = None


def registry() -> SchemaRegistry:
    """The shipped schemas, loaded once per process (they are read-only data)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = SchemaRegistry()
    return _REGISTRY
