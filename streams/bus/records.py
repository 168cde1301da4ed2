"""Core outputs → topic records and table rows: the one mapping the worker, the ClickHouse sink and
``streams replay`` share.

The worker turns what the core returns (an :class:`IngestResult`, the engine's :class:`Outputs`) into
records of logical topics (:func:`ingest_records`, :func:`output_records`, :func:`case_record`); the
ClickHouse sink turns a record of a derived topic into rows of its table (:func:`rows_of`); replay,
which has no Kafka, composes the two (:func:`table_rows`), so a replayed month lands in exactly the
rows the live worker would have written. Pure: plain dicts in and out; encoding is the Emitter's job,
so nothing here imports Faust, a Kafka client or the codec.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from streams.bus.topics import (
    ACTIONS_REJECTED,
    CASE_EVENTS,
    CASE_INPUTS,
    CASES,
    DEVICE_EPISODES,
    DISPATCHES,
    IOT_COMMANDS,
    RAW_SCHEMAS,
    SLA_ALERTS,
    STORE_ROWS,
    TRIAGE,
    WEBHOOK_DELIVERIES,
    dlq,
)
from streams.core.cases.engine import UNLOCATED, Outputs
from streams.core.model import IngestResult, Signal

# The `signals` table's columns a signal fills (docs/CONTRACTS.md); the signal record carries more.
SIGNAL_COLUMNS = (
    "signal_id", "source", "source_kind", "source_id", "ts_ms", "ingest_ms", "category_code", "category_name",
    "confidence", "context", "lat", "lon", "cell", "community", "street", "street_code", "district", "address",
    "reporter_id", "reporter_kind", "handled_on_spot",
)
# Fields of the dispatch and sla_alert records (schemas/dispatch.avsc, sla_alert.avsc).
DISPATCH_FIELDS = ("dispatch_id", "case_id", "ts_ms", "departments", "units", "level", "category_code", "category_name",
                   "deadline_ms", "street", "kb_version")
SLA_ALERT_FIELDS = ("alert_id", "case_id", "ts_ms", "stage", "light", "kind", "departments", "deadline_ms")
# The only ClickHouse columns that may hold NULL (CONTRACTS.md); any other missing value takes its default.
NULLABLE_COLUMNS = frozenset({"lat", "lon"})

# Derived topic → the table its records land in. Dead-letter topics (<raw>.dlq, case.inputs.dlq) all
# land in `dead_letters`; store.rows names its table in each record.
TABLE_OF_TOPIC: dict[str, str] = {
    CASE_INPUTS: "signals",  # only the records of kind "signal"
    CASES: "cases",
    CASE_EVENTS: "case_transitions",
    DISPATCHES: "dispatches",
    SLA_ALERTS: "sla_alerts",
    TRIAGE: "triage",
    DEVICE_EPISODES: "device_episodes",
}
DEAD_LETTER_TOPICS = tuple(dlq(t) for t in (*RAW_SCHEMAS, CASE_INPUTS))
SINK_TOPICS = (*TABLE_OF_TOPIC, STORE_ROWS, *DEAD_LETTER_TOPICS)


class TopicRecord(NamedTuple):  # a NamedTuple: built for every output, several times cheaper than a frozen dataclass
    """One outgoing record: a logical topic (streams.bus.topics), a value of its schema, a partition key."""

    topic: str
    value: Mapping[str, Any]  # read only: encoded by the Emitter or mapped to rows
    key: str | None = None


class Inbound(NamedTuple):  # built for every input record
    """One record as read from Kafka, whatever client read it (a Faust event, an aiokafka record, a test)."""

    topic: str                 # physical topic name
    partition: int
    offset: int
    timestamp_ms: int | None   # the broker's/producer's timestamp, when there is one
    key: bytes | None
    value: bytes | None        # None: a tombstone (the adapters dead-letter it with that reason)


def _json(value: Any) -> str:
    """A value as JSON text (orjson: several times the stdlib's speed, on every output of the case path)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


# -- case.inputs: keyed by street code, so a case's signals, actions and ticks meet in one partition ------
def case_inputs_key(signal: Signal) -> str:
    """The case.inputs key of a signal: its street code, or the core's stand-in for an unlocated one."""
    return signal.street_code or UNLOCATED


def case_inputs_key_of_case(case_id: str) -> str:
    """Case ids start with the street code of their first signal (``make_case_id``): the same key."""
    return case_id.split("-", 1)[0]


def signal_input(signal: Signal) -> TopicRecord:
    return TopicRecord(CASE_INPUTS, {"kind": "signal", "signal": _json(signal.to_dict()), "action": None,
                                     "tick_ms": None}, key=case_inputs_key(signal))


def action_input(action: Mapping[str, Any], case_id: str) -> TopicRecord:
    """A case action routed to the partition of its case, with its ``case_id`` filled in."""
    return TopicRecord(CASE_INPUTS, {"kind": "action", "signal": None, "tick_ms": None,
                                     "action": _json({**action, "case_id": case_id})},
                       key=case_inputs_key_of_case(case_id))


def station_report_input(report: Mapping[str, Any]) -> TopicRecord:
    """A registered station reported (streams.core.field.StationReport), keyed by its street code: the
    partition that owns the station's daily deadline sees it."""
    return TopicRecord(CASE_INPUTS, {"kind": "station_report", "signal": None, "action": None, "tick_ms": None,
                                     "report": _json(dict(report))}, key=str(report["street_code"]))


def tick_input(now_ms: int) -> TopicRecord:
    """A clock tick; the timer sends one to every assigned partition, without a key."""
    return TopicRecord(CASE_INPUTS, {"kind": "tick", "signal": None, "action": None, "tick_ms": now_ms})


def action_rejected(action: Mapping[str, Any], ts_ms: int, reason: str) -> TopicRecord:
    """An action the router could not place (no case holds its source record)."""
    return TopicRecord(ACTIONS_REJECTED, {"action_id": action["action_id"], "case_id": None, "ts_ms": ts_ms,
                                          "reason": reason, "action": _json(action)})


# -- core outputs → topic records -------------------------------------------------------------------
def ingest_records(result: IngestResult) -> list[TopicRecord]:
    """Signals → case.inputs, triage → triage.manual 人工分拨, device commands → iot.commands, alarm episodes
    opened or closed → device.episodes (keyed by device). (``result.rows``, for tables without a topic of their
    own, travel as store.rows: see the Emitter.)"""
    out = [signal_input(signal) for signal in result.signals]
    out += [TopicRecord(TRIAGE, dict(item.__dict__), key=item.topic) for item in result.triage]
    out += [TopicRecord(IOT_COMMANDS, dict(command.__dict__), key=command.device_id) for command in result.commands]
    out += [TopicRecord(DEVICE_EPISODES, dict(episode), key=episode["device_id"]) for episode in result.episodes]
    out += [station_report_input(report) for report in result.station_reports]
    return out


def output_records(outputs: Outputs) -> list[TopicRecord]:
    """The engine's transitions, dispatches, SLA alerts and rejections, keyed by case. Case rows are
    left out: the worker sends each case's latest row once per batch (:func:`case_record`)."""
    out = [TopicRecord(CASE_EVENTS, {"event_id": row["event_id"], "case_id": row["case_id"], "ts_ms": row["ts_ms"],
                                     "stage": row["to_stage"], "action": row["action"],
                                     "actor_kind": row.get("actor_kind"), "actor_id": row.get("actor_id"),
                                     "detail": _json(row)}, key=row["case_id"])
           for row in outputs.case_transitions]
    out += [TopicRecord(DISPATCHES, {k: row.get(k) for k in DISPATCH_FIELDS}, key=row["case_id"])
            for row in outputs.dispatches]
    out += [TopicRecord(SLA_ALERTS, {k: row.get(k) for k in SLA_ALERT_FIELDS}, key=row["case_id"])
            for row in outputs.sla_alerts]
    out += [TopicRecord(ACTIONS_REJECTED, rejection, key=rejection.get("case_id")) for rejection in outputs.rejections]
    out += [cross_input(item) for item in outputs.cross]
    return out


# Case inputs one partition's engine sends another's (cross-boundary dedup: CaseEngine.on_probe & co.).
CROSS_KINDS = ("probe", "void_duplicate", "absorb")


def cross_input(item: Mapping[str, Any]) -> TopicRecord:
    """An engine's input for the partition of street ``item["key"]``, its payload in the ``action`` field."""
    payload = {k: v for k, v in item.items() if k not in ("key", "kind")}
    return TopicRecord(CASE_INPUTS, {"kind": item["kind"], "signal": None, "action": _json(payload),
                                     "tick_ms": None}, key=item["key"])


def case_record(row: Mapping[str, Any]) -> TopicRecord:
    """The current state of a case (a ``cases`` row) on the compacted cases topic."""
    return TopicRecord(CASES, {"case_id": row["case_id"], "version": row["version"], "state": _json(row)},
                       key=row["case_id"])


def delivery_record(delivery: Mapping[str, Any]) -> TopicRecord:
    return TopicRecord(WEBHOOK_DELIVERIES, delivery, key=delivery["case_id"])


def dead_letter_value(topic: str, partition: int, offset: int, reason: str, ts_ms: int, original: bytes,
                      key: bytes | None) -> dict[str, Any]:
    """A dead_letter record for ``<topic>.dlq``: where the input was, why it was parked, its bytes."""
    return {"topic": topic, "partition": partition, "offset": offset, "reason": reason, "ts_ms": ts_ms,
            "original": bytes(original), "key": bytes(key) if key is not None else None}


def store_rows_record(table: str, rows: Sequence[Mapping[str, Any]]) -> TopicRecord:
    """Rows of a table that has no topic of its own, many rows per record."""
    # orjson: a closing minute of a city's devices is tens of thousands of rows (same JSON, ~10x faster)
    return TopicRecord(STORE_ROWS, {"table": table, "rows": orjson.dumps(list(rows)).decode("utf-8")}, key=table)


# -- topic records → table rows ---------------------------------------------------------------------
def clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """ClickHouse columns are non-null (CONTRACTS.md): a missing value takes the column default."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None and key not in NULLABLE_COLUMNS:
            continue
        out[key] = int(value) if isinstance(value, bool) else value
    return out


def _text(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode()


def rows_of(topic: str, value: Mapping[str, Any], stored_ms: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The table a record of a derived ``topic`` (logical name) lands in, and its rows, cleaned.
    ``("", [])`` for a record that has no row (a case input that is an action or a tick).
    ``stored_ms``: when the row is written (the signal's ingest → ClickHouse latency); None leaves it 0.
    Raises KeyError or ValueError for a record that does not fit its topic or a topic without a table."""
    if topic in DEAD_LETTER_TOPICS:
        return "dead_letters", [clean_row({**value, "original": _text(value["original"]),
                                           "key": _text(value.get("key"))})]
    if topic == CASE_INPUTS:
        if value["kind"] != "signal":
            return "", []
        signal = orjson.loads(value["signal"])
        row = {k: signal.get(k) for k in SIGNAL_COLUMNS}
        if stored_ms is not None:
            row["stored_ms"] = stored_ms
        return "signals", [clean_row(row)]
    if topic == CASES:
        return "cases", [clean_row(orjson.loads(value["state"]))]
    if topic == CASE_EVENTS:
        return "case_transitions", [clean_row(orjson.loads(value["detail"]))]
    if topic == DISPATCHES:
        return "dispatches", [clean_row({**value, "primary_department": (value["departments"] or [""])[0],
                                         "primary_unit": (value.get("units") or value["departments"] or [""])[0]})]
    if topic in (SLA_ALERTS, TRIAGE, DEVICE_EPISODES):
        return TABLE_OF_TOPIC[topic], [clean_row(value)]
    if topic == STORE_ROWS:
        return value["table"], [clean_row(row) for row in orjson.loads(value["rows"])]
    raise ValueError(f"no table for topic {topic}")


def table_rows(records: Iterable[TopicRecord], stored_ms: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows by table of records that have a table (others, e.g. iot.commands, are skipped): what the
    sink would write for them. Replay's path to the store."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.topic not in SINK_TOPICS:
            continue
        table, rows = rows_of(record.topic, record.value, stored_ms)
        if table:
            tables.setdefault(table, []).extend(rows)
    return tables

