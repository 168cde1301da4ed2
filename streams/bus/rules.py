"""Input rules: what a raw record must satisfy beyond its Avro schema, the same for JSON and Avro.

A raw record that breaks a rule is dead-lettered (``<topic>.dlq``) with a reason naming the field;
the rules are listed in docs/reliability.md. Structural rules hold for every raw record:

* every number finite (no NaN or ±Infinity; JSON numbers above 1e308 overflow to infinity and are
  refused as such);
* every string valid Unicode (no lone surrogate: such a string cannot be written as UTF-8 anywhere
  downstream) and at most ``input_max_field_chars`` characters; arrays at most ``input_max_items``;
* the checks the Avro types cannot express (allowed values of ``line``, ``reporter_kind``, ...,
  ``lat`` within -90..90, ``lon`` within -180..180, ``confidence`` within 0..1, ISO-8601 timestamps);
* event time (``received_at``, ``reported_at``, ``ts``) inside a plausibility window around the
  record's Kafka timestamp: at most ``event_time_max_age_days`` before it and
  ``event_time_max_ahead_seconds`` after it. The window is measured against the Kafka timestamp,
  not the clock, so a record replayed after an outage gets the same verdict as the first time.
  Outside the window the record is dead-lettered, never clamped: a clamped time would start SLA
  clocks at an instant nobody reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.core import times
from streams.settings import Settings

# Fields carrying ISO-8601 timestamps (event time) in the raw contracts.
ISO_FIELDS = ("received_at", "reported_at", "requested_at", "ts")
OPEN311_MAX_DESCRIPTION = 4000  # GeoReport v2: "free form text limited to 4,000 characters"
DAY_MS = 86_400_000

ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("hotline_call", "line"): ("12345", "12319"),
    ("field_report", "reporter_kind"): ("inspector", "station", "committee"),
    ("registry_change", "kind"): ("housing_contract", "business_scope"),
    ("case_action", "actor_kind"): ("department", "center", "station", "committee", "inspector"),
}
RANGES: dict[str, tuple[float, float]] = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0)}
SCHEMA_RANGES: dict[tuple[str, str], tuple[float, float]] = {("camera_alert", "confidence"): (0.0, 1.0)}


class RuleViolation(ValueError):
    """A raw record outside the input rules; the message names the field and the rule."""


@dataclass(frozen=True)
class InputRules:
    max_field_chars: int
    max_items: int
    max_age_ms: int
    max_ahead_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> InputRules:
        return cls(max_field_chars=settings.input_max_field_chars, max_items=settings.input_max_items,
                   max_age_ms=int(settings.event_time_max_age_days * DAY_MS),
                   max_ahead_ms=int(settings.event_time_max_ahead_seconds * 1000))


# The rules with the settings' declared defaults (Settings is the one place they are defined).
DEFAULT_RULES = InputRules.from_settings(Settings.model_construct())


def check_values(value: Any, rules: InputRules, path: str = "") -> None:
    """Finite numbers, valid and bounded strings, bounded arrays, at any depth."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RuleViolation(f"field '{path}' is not a finite number: {value!r}")
    elif isinstance(value, str):
        if len(value) > rules.max_field_chars:
            raise RuleViolation(f"field '{path}' is {len(value)} characters long; the limit is "
                                f"{rules.max_field_chars}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RuleViolation(f"field '{path}' is not valid Unicode (lone surrogate at character "
                                f"{exc.start})") from None
    elif isinstance(value, (bytes, bytearray)):
        if len(value) > rules.max_field_chars:
            raise RuleViolation(f"field '{path}' is {len(value)} bytes long; the limit is {rules.max_field_chars}")
    elif isinstance(value, list):
        if len(value) > rules.max_items:
            raise RuleViolation(f"field '{path}' has {len(value)} items; the limit is {rules.max_items}")
        for i, item in enumerate(value):
            check_values(item, rules, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_values(item, rules, f"{path}.{key}" if path else str(key))


def event_ms(record: dict[str, Any], field: str) -> int:
    """The event time in a field as epoch ms; a value that is no usable instant is a violation."""
    try:
        return times.iso_to_ms(record[field])
    except times.BadTimestamp as exc:
        raise RuleViolation(f"field '{field}': {exc}") from None
    except (OverflowError, ValueError, OSError) as exc:  # e.g. year 1 at +08:00 falls before year 1 UTC
        raise RuleViolation(f"field '{field}': not a usable instant: {record[field]!r} ({exc})") from None


def check_semantics(name: str, record: dict[str, Any]) -> None:
    """Checks the Avro types cannot express. Raises RuleViolation naming the field."""
    for key in ISO_FIELDS:
        if isinstance(record.get(key), str):
            event_ms(record, key)
    for (schema, key), allowed in ALLOWED_VALUES.items():
        if schema == name and record.get(key) not in allowed:
            quoted = [f'"{a}"' if key == "line" else a for a in allowed]
            choices = f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            raise RuleViolation(f"field '{key}' must be {choices}, got {record.get(key)!r}")
    if name == "case_action":
        if record.get("action") == "from_triage":   # the centre turns a triage record 人工分拨 into a case
            if not record.get("triage_id"):
                raise RuleViolation("a from_triage action needs 'triage_id'")
        elif not record.get("case_id") and not record.get("source_id"):
            raise RuleViolation("a case action needs 'case_id' or 'source_id'")
    if name == "open311_request":
        if (record["lat"] is None) != (record["lon"] is None):
            raise RuleViolation("fields 'lat' and 'lon' go together: give both or neither")
        if record["lat"] is None and not record["address_string"] and not record["address_id"]:
            raise RuleViolation("an Open311 request needs a location: 'lat' and 'lon', 'address_string' or "
                                "'address_id'")
        if record["description"] is not None and len(record["description"]) > OPEN311_MAX_DESCRIPTION:
            raise RuleViolation(f"field 'description' is longer than {OPEN311_MAX_DESCRIPTION} characters")
    for key, (low, high) in RANGES.items():
        value = record.get(key)
        if value is not None and not low <= value <= high:
            raise RuleViolation(f"field '{key}' out of range {low:g}..{high:g}: {value}")
    for (schema, key), (low, high) in SCHEMA_RANGES.items():
        value = record.get(key)
        if schema == name and value is not None and not low <= value <= high:
            raise RuleViolation(f"field '{key}' must be within {low:g}..{high:g}, got {value}")


def check_event_time(record: dict[str, Any], rules: InputRules, ref_ms: int) -> None:
    """Every event-time field within [ref - max_age, ref + max_ahead] (ref: the Kafka timestamp)."""
    for key in ISO_FIELDS:
        if not isinstance(record.get(key), str):
            continue
        ts_ms = event_ms(record, key)
        if ts_ms < ref_ms - rules.max_age_ms:
            raise RuleViolation(f"field '{key}' is {(ref_ms - ts_ms) / DAY_MS:.1f} days before the record reached "
                                f"Kafka; the limit is {rules.max_age_ms / DAY_MS:g} days")
        if ts_ms > ref_ms + rules.max_ahead_ms:
            raise RuleViolation(f"field '{key}' is {(ts_ms - ref_ms) / 1000:.0f} s after the record reached Kafka "
                                f"(in the future); the limit is {rules.max_ahead_ms / 1000:g} s")


def check_input(name: str, record: dict[str, Any], rules: InputRules = DEFAULT_RULES,
                ref_ms: int | None = None) -> None:
    """All input rules for a raw record of schema ``name``; the event-time window only with ``ref_ms``."""
    check_values(record, rules)
    check_semantics(name, record)
    if ref_ms is not None:
        check_event_time(record, rules, ref_ms)
