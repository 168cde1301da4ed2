"""POST /v1/feeds/<topic>: one JSON record, a JSON array or JSON lines → validated with the worker's own
schemas and rules (``streams.bus.codec``), the valid ones produced (Avro single-object), the invalid ones
answered with field-level reasons and not produced.

Limits: the body (``gateway_max_body_bytes``), each record (``gateway_max_record_bytes`` of JSON) and each
string field (``gateway_max_field_chars``) answer 413 for the whole request, before anything is produced:
an oversized payload is a client bug, not a city report to sort out record by record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import fastavro
import orjson

from streams.bus.codec import ISO_FIELDS, DecodeError, SchemaRegistry, check_semantics, parse_iso
from streams.bus.topics import CASE_ACTIONS, OPEN311_REQUESTS, RAW_SCHEMAS

# Raw feeds a key may post. case.actions and open311.requests have their own doors (the work API takes
# the actor from the key; Open311 mints the request id and strips personal data).
FEED_TOPICS: dict[str, str] = {t: s for t, s in RAW_SCHEMAS.items() if t not in (CASE_ACTIONS, OPEN311_REQUESTS)}
OWN_DOOR = {CASE_ACTIONS: "POST /v1/cases/{case_id}/actions", OPEN311_REQUESTS: "POST /open311/v2/requests.json"}
# The record field that keys a feed's Kafka messages: a re-sent record lands on the same partition.
KEY_FIELDS = {
    "hotline_call": "call_id",
    "field_report": "report_id",
    "field_track": "inspector_id",
    "iot_reading": "device_id",
    "camera_alert": "alert_id",
    "registry_change": "change_id",
    "case_action": "case_id",
    "open311_request": "request_id",
}
JSON_LINES_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/json-seq",
    "text/plain",
)
_FIELD_IN_REASON = re.compile(r"field '([A-Za-z_][A-Za-z0-9_]*)'")


class PayloadError(ValueError):
    """The body as a whole cannot be read (400)."""


class TooLarge(ValueError):
    """A limit was exceeded (413); the message says which and where."""


@dataclass
class Outcome:
    index: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None  # the validated record (accepted so far)

    @property
    def ok(self) -> bool:
        return not self.errors


def split_body(body: bytes, content_type: str) -> list[tuple[Any, str | None, int]]:
    """(parsed JSON or None, parse error or None, raw size) per record, in order."""
    text = body.strip()
    if not text:
        raise PayloadError("empty body: send a JSON object, a JSON array or JSON lines")
    as_lines = content_type in JSON_LINES_TYPES
    if not as_lines:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if b"\n" not in text:
                raise PayloadError(f"not JSON: {exc}") from None
            as_lines = True  # several documents: read it as JSON lines
        else:
            if isinstance(doc, list):
                return [(item, None, -1) for item in doc]
            return [(doc, None, len(text))]
    out: list[tuple[Any, str | None, int]] = []
    for line in text.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            out.append((orjson.loads(line), None, len(line)))
        except orjson.JSONDecodeError as exc:
            out.append((None, f"not JSON: {exc}", len(line)))
    return out


def check_sizes(items: list[tuple[Any, str | None, int]], body_size: int, max_record: int, max_field: int) -> None:
    """Raise TooLarge for the first record or string field over its limit."""
    for index, (obj, _, size) in enumerate(items):
        if body_size > max_record:
            if size < 0:
                size = len(orjson.dumps(obj))
            if size > max_record:
                raise TooLarge(f"record {index} is {size} bytes of JSON; the limit is {max_record}")
        if isinstance(obj, dict) and not 0 <= size <= max_field:  # no string is longer than its line
            for name, value in obj.items():
                if isinstance(value, str) and len(value) > max_field:
                    raise TooLarge(
                        f"record {index}: field '{name}' has {len(value)} characters; the limit is {max_field}"
                    )
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, str) and len(item) > max_field:
                            raise TooLarge(
                                f"record {index}: an item of field '{name}' has {len(item)} characters; "
                                f"the limit is {max_field}"
                            )


def field_errors(codec: SchemaRegistry, schema_name: str, obj: Any, error: DecodeError) -> list[dict[str, Any]]:
    """Why a record failed, field by field. The verdict is codec.from_json's (the worker's); this only
    breaks it down so a client sees every bad field at once. Falls back to the codec's one reason."""
    if not isinstance(obj, dict):
        return [{"field": None, "reason": str(error)}]
    schema = codec[schema_name]
    errors: list[dict[str, Any]] = []
    known = set(schema.field_names)
    errors += [{"field": name, "reason": "unknown field"} for name in obj if name not in known]
    record: dict[str, Any] = {}
    for spec in schema.parsed["fields"]:
        name = spec["name"]
        if name not in obj:
            if "default" not in spec:
                errors.append({"field": name, "reason": "missing required field"})
            else:
                record[name] = spec["default"]
            continue
        value = obj[name]
        if isinstance(value, int) and not isinstance(value, bool) and _takes_double(spec["type"]):
            value = float(value)
        record[name] = value
        try:
            fastavro.validation.validate(value, spec["type"], raise_errors=True)
        except Exception:
            errors.append({"field": name, "reason": f"expected {_type_text(spec['type'])}, got {_json_type(value)}"})
            continue
        if name in ISO_FIELDS and isinstance(value, str):
            try:
                parse_iso(value)
            except DecodeError as exc:
                errors.append({"field": name, "reason": str(exc)})
    if not errors:
        try:
            check_semantics(schema_name, record)
        except DecodeError as exc:
            match = _FIELD_IN_REASON.search(str(exc))
            errors.append({"field": match.group(1) if match else None, "reason": str(exc)})
    return errors or [{"field": None, "reason": str(error)}]


def _takes_double(avro_type: Any) -> bool:
    # JSON has no int/float distinction: the codec lets 31 stand for 31.0 where a double is expected
    return "double" in avro_type if isinstance(avro_type, list) else avro_type == "double"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _type_text(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " or ".join(_type_text(t) for t in avro_type)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            return f"array of {_type_text(avro_type['items'])}"
        if avro_type.get("type") == "map":
            return f"object of {_type_text(avro_type['values'])}"
        return str(avro_type.get("type"))
    return {"double": "number", "long": "integer", "int": "integer", "boolean": "boolean"}.get(avro_type, avro_type)


def validate_all(codec: SchemaRegistry, schema_name: str, items: list[tuple[Any, str | None, int]]) -> list[Outcome]:
    outcomes = []
    from_json = codec.from_json
    for index, (obj, parse_error, _) in enumerate(items):
        if parse_error is not None:
            outcomes.append(Outcome(index, [{"field": None, "reason": parse_error}]))
            continue
        try:
            outcomes.append(
                Outcome(
                    index,
                    record=from_json(schema_name, obj)
                    if isinstance(obj, dict)
                    else from_json(schema_name, orjson.dumps(obj)),
                )
            )
        except DecodeError as exc:
            outcomes.append(Outcome(index, field_errors(codec, schema_name, obj, exc)))
    return outcomes


def message_key(schema_name: str, record: dict[str, Any]) -> bytes | None:
    name = KEY_FIELDS.get(schema_name)
    value = record.get(name) if name else None
    if schema_name == "case_action" and not value:
        value = record.get("source_id")
    return str(value).encode("utf-8") if value is not None else None


def routes(gateway_key: Any) -> list[Any]:
    # imported here: cases uses field_errors from this module
    from aiohttp import web

    from streams.gateway.cases import API_KEY, ApiError, json_response
    from streams.gateway.limits import RateLimited

    async def post_feed(request: web.Request) -> web.Response:
        g = request.app[gateway_key]
        topic = request.match_info["topic"]
        if topic in OWN_DOOR:
            raise ApiError(404, f"{topic} has its own door: {OWN_DOOR[topic]}")
        schema_name = FEED_TOPICS.get(topic)
        if schema_name is None:
            raise ApiError(404, f"no feed {topic!r}; feeds: {', '.join(FEED_TOPICS)}")
        key = request.get(API_KEY)
        if key is None:
            raise ApiError(401, "an API key is required (header X-Api-Key or Authorization: Bearer)")
        if not key.may_feed(topic):
            raise ApiError(403, f"key {key.name!r} may not post to {topic} (scope feed:{topic} missing)")
        body = await request.read()  # over gateway_max_body_bytes aiohttp answers 413 itself
        try:
            items = split_body(body, request.content_type)
        except PayloadError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            check_sizes(items, len(body), g.settings.gateway_max_record_bytes, g.settings.gateway_max_field_chars)
        except TooLarge as exc:
            raise ApiError(413, str(exc)) from None
        verdict = await g.limits.records(key.name, len(items), key.record_rate_limit)
        if not verdict.allowed:
            raise RateLimited(verdict.retry_after, f"{len(items)} records over the key's record budget")
        outcomes = validate_all(g.codec, schema_name, items)
        valid = [o for o in outcomes if o.ok]
        physical = g.topics.name(topic)
        encode = g.codec.encode
        records = [o.record for o in valid if o.record is not None]
        errors = (
            await g.send_many([(physical, message_key(schema_name, r), encode(schema_name, r)) for r in records])
            if records
            else []
        )
        failed = 0
        for outcome, error in zip(valid, errors, strict=True):
            if error is not None:
                failed += 1
                outcome.errors.append({"field": None, "reason": f"not stored, retry: {error}", "retry": True})
        accepted = len(valid) - failed
        g.metrics.records.labels(topic=topic, outcome="accepted").inc(accepted)
        g.metrics.records.labels(topic=topic, outcome="rejected").inc(len(outcomes) - len(valid))
        g.metrics.records.labels(topic=topic, outcome="failed").inc(failed)
        results = [
            {"index": o.index, "status": "accepted"}
            if o.ok
            else {
                "index": o.index,
                "status": "failed" if o.errors and o.errors[-1].get("retry") else "rejected",
                "errors": o.errors,
            }
            for o in outcomes
        ]
        return json_response(
            {
                "topic": topic,
                "accepted": accepted,
                "rejected": len(outcomes) - len(valid),
                "failed": failed,
                "records": results,
            },
            status=503 if failed else 202,
            headers={"Retry-After": "1"} if failed else None,
        )

    return [web.post("/v1/feeds/{topic}", post_feed)]
