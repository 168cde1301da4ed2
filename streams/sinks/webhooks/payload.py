"""Lifecycle notifications -> ``webhook_delivery`` records (schemas/webhook_delivery.avsc).

One record per department that has an endpoint wanting the notification's kind. The body is the
JSON documented in docs/webhooks.md and schemas/webhook_payload.schema.json. Callers' phone numbers
never leave in clear: a ``caller``-like field becomes a keyed hash (or is dropped), and phone-like
digit runs inside free text are masked.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from streams.bus.codec import registry
from streams.core.privacy import mask_optional
from streams.sinks.webhooks.config import KINDS, WebhooksConfig

PAYLOAD_SCHEMA_ID = "citygrid.webhook/v1"
# Notification fields that may carry a caller's identity (never sent in clear).
CALLER_FIELDS = ("caller", "caller_phone", "phone", "reporter_phone", "contact_phone")


class NotificationError(ValueError):
    """A notification that does not follow docs/CONTRACTS.md "Webhook events"; the message says why."""


def idempotency_key(event_id: str, department: str) -> str:
    """Stable across retries, restarts and redeliveries: receivers deduplicate on it."""
    return hashlib.sha256(f"{event_id}\x1f{department}".encode()).hexdigest()


def mask_phones(text: str | None) -> str | None:
    """Phone and 身份证 numbers masked (``138****5678``): the one rule of streams.core.privacy."""
    return mask_optional(text)


def caller_ref(phone: str, key: str) -> str:
    """Keyed hash of a caller's number: lets a department link repeat callers without seeing the number.
    (A bare SHA-256 of an 11-digit number is reversible by enumeration, hence the key.)"""
    digits = re.sub(r"\D", "", phone)
    return hmac.new(key.encode("utf-8"), digits.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _require(note: Mapping[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
    if name not in note or note[name] is None:
        raise NotificationError(f"notification lacks '{name}'")
    value = note[name]
    if not isinstance(value, types) or isinstance(value, bool):
        raise NotificationError(f"notification field '{name}' has type {type(value).__name__}")
    return value


def _optional(note: Mapping[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
    value = note.get(name)
    if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
        raise NotificationError(f"notification field '{name}' has type {type(value).__name__}")
    return value


def build_payload(note: Mapping[str, Any], department: str, config: WebhooksConfig) -> dict[str, Any]:
    """The JSON body for one department (validated by schemas/webhook_payload.schema.json)."""
    kind = _require(note, "kind", str)
    if kind not in KINDS:
        raise NotificationError(f"notification kind {kind!r} is not one of {', '.join(KINDS)}")
    case_id = _require(note, "case_id", str)
    event_id = _require(note, "event_id", str)
    ts_ms = _require(note, "ts_ms", int)
    level = _optional(note, "level", int)
    if level is not None and level not in (1, 2, 3, 4):
        raise NotificationError(f"notification level {level} is not 1..4")
    deadline_ms = _optional(note, "deadline_ms", int)
    lat = _optional(note, "lat", (int, float))
    lon = _optional(note, "lon", (int, float))
    key = idempotency_key(event_id, department)
    body: dict[str, Any] = {
        "schema": PAYLOAD_SCHEMA_ID,
        "idempotency_key": key,
        "event_id": event_id,
        "kind": kind,
        "ts_ms": ts_ms,
        "occurred_at": _iso(ts_ms),
        "department": department,
        "departments": list(note.get("departments") or []),
        "case": {
            "case_id": case_id,
            "category_code": _optional(note, "category_code", str) or "",
            "category_name": _optional(note, "category_name", str) or "",
            "level": level,
            "deadline_ms": deadline_ms,
            "deadline_at": _iso(deadline_ms),
        },
        "location": {
            "address": mask_phones(_optional(note, "address", str)),
            "lat": float(lat) if lat is not None else None,
            "lon": float(lon) if lon is not None else None,
            "cell": _optional(note, "cell", str),
            "street": _optional(note, "street", str),
        },
        "links": {"case": f"{config.links_base_url.rstrip('/')}/cases/{quote(case_id, safe='')}"},
    }
    plan = note.get("plan")
    if isinstance(plan, Mapping):   # response_level: the crowd plan level now in force and what it sets in motion
        body["plan"] = {"level": plan.get("plan_level"), "name": plan.get("plan_name"),
                        "from_level": plan.get("from_level"), "count": plan.get("count"), "area": plan.get("area"),
                        "actions": list(plan.get("actions") or [])}
    phone = next((note[f] for f in CALLER_FIELDS if note.get(f)), None)
    if phone is not None and config.pii_hash_key:
        body["caller_ref"] = caller_ref(str(phone), config.pii_hash_key)
    return body


def payload_json(body: dict[str, Any]) -> str:
    """Canonical text (sorted keys, no spaces, UTF-8 Chinese): the exact bytes that are signed."""
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def note_units(notification: Mapping[str, Any], departments: list[str]) -> list[str]:
    """The instances parallel to ``departments`` (notifications from before instances: the kinds)."""
    units = notification.get("units")
    if isinstance(units, list) and len(units) == len(departments) and all(isinstance(u, str) for u in units):
        return units
    return list(departments)


def build_deliveries(
    notification: Mapping[str, Any], config: WebhooksConfig, now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """``webhook_delivery`` records for ``notification``: one per listed department whose endpoint
    wants its kind (departments without an endpoint get none). Keyed by case id on the topic.

    ``created_ms`` is wall-clock ``now_ms`` (default: now), not event time, so that the delivery TTL
    counts from when the pipeline emitted it even during a replay of old events."""
    if not isinstance(notification, dict):
        raise NotificationError(f"notification must be a dict, got {type(notification).__name__}")
    departments = _require(notification, "departments", list)
    if not all(isinstance(d, str) for d in departments):
        raise NotificationError("notification 'departments' must be a list of department names")
    kind = _require(notification, "kind", str)
    created_ms = int(time.time() * 1000) if now_ms is None else now_ms
    records: list[dict[str, Any]] = []
    units = note_units(notification, departments)
    receivers = []
    for department, unit in zip(departments, units, strict=True):
        # a street's own instance (徐家汇街道城管中队) receives when it has an endpoint, else its kind
        receivers.append(unit if config.endpoint_for(unit, kind) is not None else department)
    for department in dict.fromkeys(receivers):  # de-duplicate, keep order (primary first)
        if config.endpoint_for(department, kind) is None:
            continue
        body = build_payload(notification, department, config)
        key = body["idempotency_key"]
        records.append({
            "delivery_id": f"wh-{key[:24]}",
            "department": department,
            "case_id": body["case"]["case_id"],
            "kind": kind,
            "idempotency_key": key,
            "created_ms": created_ms,
            "attempt": 1,
            "not_before_ms": 0,
            "payload": payload_json(body),
            "event_id": body["event_id"],
            "error": None,
            "http_status": None,
            "dead_ms": None,
            "redeliveries": 0,
        })
    if not records:
        # validate anyway: a malformed notification is an error even when nobody listens
        build_payload(notification, "", config)
    return records


def encode_delivery(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) for ``webhook.deliveries``: keyed by case id so a case's events share a partition."""
    return record["case_id"].encode("utf-8"), registry().encode("webhook_delivery", record)
