"""``streams replay FILE``: run the lifecycle core over recorded events, without Kafka.

Input: JSON lines ``{"topic": "<raw topic>", "value": {<raw record>}}`` (topics as in
``streams.bus.topics.RAW_SCHEMAS``: hotline.calls, field.reports, iot.readings, camera.alerts,
registry.changes, field.tracks, case.actions). Every record is validated against its schema, then
all records run in event-time order through the same Ingestor and CaseEngine as the worker, with a
virtual clock that fires SLA timers between events. This is how an officer backtests a
knowledge-base change on last month's data (``--kb``).

Invalid lines are reported on stderr with their line number and counted (exit status 1 when any).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, cast

from streams.bus import records
from streams.bus.codec import DecodeError, iso_to_ms, registry
from streams.bus.records import TopicRecord
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import CASE_ACTIONS, RAW_SCHEMAS, dlq
from streams.core.cases.engine import CaseEngine, Outputs, case_summary
from streams.core.cases.model import CaseAction, CaseDoc, Notification, Rejection
from streams.core.cases.sla import DEFAULT_OVERRIDE_FILE, WorkCalendar
from streams.core.field import StationReport, ZeroReportBook
from streams.core.model import IngestResult
from streams.core.privacy import mask_text
from streams.settings import Settings

# Fields holding the event time of each raw record (first present wins).
TIME_FIELDS = ("received_at", "reported_at", "ts")
FLUSH_ROWS = 5000


class RowSink(Protocol):
    def insert(self, table: str, rows: list[dict]) -> None: ...


@dataclass
class ReplayReport:
    lines: int = 0
    records: int = 0
    invalid: int = 0           # lines that are not JSON / not a known topic / not schema-valid
    unusable: int = 0          # schema-valid raw records the ingest refused (would go to the DLQ)
    signals: int = 0
    triage: int = 0
    merged: int = 0
    actions: int = 0
    rejected_actions: int = 0
    alerts: int = 0
    zero_report_alerts: int = 0   # residential stations that missed their daily report 零报告
    cases: dict[str, CaseDoc] = field(default_factory=dict)   # case_id -> case document
    rejections: list[Rejection] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    def summary(self) -> str:
        return (f"replayed {self.lines} lines: {self.records} records, {self.invalid} invalid, "
                f"{self.unusable} unusable, {self.signals} signals ({self.merged} merged, {self.triage} to triage), "
                f"{len(self.cases)} cases, {self.actions} actions ({self.rejected_actions} rejected), "
                f"{self.alerts} SLA alerts, {self.zero_report_alerts} missed zero-reports")


@dataclass(order=True)
class _Event:
    ts_ms: int
    line_no: int
    topic: str = field(compare=False)
    record: dict = field(compare=False)


class _Buffer:
    """Rows per table, inserted in batches into the store. Rows come from the records the worker would
    send (streams.bus.records), mapped as the ClickHouse sink maps them: the same rows as live."""

    def __init__(self, store: RowSink | None, sealer: DeadLetterSealer | None = None) -> None:
        self.store = store
        self.sealer = sealer   # seals dead-letter originals (None: no CITYGRID_DLQ_KEY configured)
        self.rows: dict[str, list[dict]] = {}

    def add(self, table: str, rows: Iterable[dict]) -> None:
        if self.store is None:
            return
        bucket = self.rows.setdefault(table, [])
        bucket.extend(rows)
        if len(bucket) >= FLUSH_ROWS:
            self.flush(table)

    def add_records(self, recs: Iterable[TopicRecord]) -> None:
        if self.store is None:
            return
        # stored_ms stays 0: a replayed signal has no live ingest → ClickHouse latency
        for table, rows in records.table_rows(recs).items():
            self.add(table, rows)

    def add_ingest(self, result: IngestResult) -> None:
        self.add_records([*records.ingest_records(result),
                          *(records.store_rows_record(table, rows) for table, rows in result.rows.items())])

    def add_outputs(self, out: Outputs) -> None:
        # every case row, not the latest per batch as the worker sends: a ReplacingMergeTree keeps the last
        self.add_records([*records.output_records(out), *map(records.case_record, out.cases)])

    def add_dead_letter(self, topic: str, line_no: int, reason: str, ts_ms: int, record: dict) -> None:
        # The original is sealed with the DLQ key like the worker's; without a key it is only named by its
        # line in the input file (which the operator holds anyway). The reason is masked.
        original = json.dumps(record, ensure_ascii=False).encode("utf-8")
        value = records.dead_letter_value(topic, 0, line_no, mask_text(reason), ts_ms,
                                          self.sealer.seal(original) if self.sealer else b"", None)
        self.add_records([TopicRecord(dlq(topic), value)])

    def flush(self, table: str | None = None) -> None:
        if self.store is None:
            return
        for name in [table] if table else list(self.rows):
            rows = self.rows.pop(name, [])
            if rows:
                self.store.insert(name, rows)


def _event_ms(record: dict) -> int:
    for name in TIME_FIELDS:
        if isinstance(record.get(name), str):
            return iso_to_ms(record[name])
    raise DecodeError(f"record has none of the time fields {TIME_FIELDS}")


def read_events(lines: Iterable[str], err: TextIO, report: ReplayReport) -> list[_Event]:
    """Parse and validate every line; invalid ones are reported (line number, reason) and counted."""
    codec = registry()
    events: list[_Event] = []
    for line_no, line in enumerate(lines, start=1):
        report.lines += 1
        if not line.strip():
            report.invalid += 1
            print(f"line {line_no}: empty line", file=err)
            continue
        try:
            try:
                envelope = json.loads(line)
            except ValueError as exc:
                raise DecodeError(f"not JSON: {exc}") from exc
            if not isinstance(envelope, dict) or set(envelope) != {"topic", "value"}:
                raise DecodeError('expected an object {"topic": ..., "value": {...}}')
            topic = envelope["topic"]
            if topic not in RAW_SCHEMAS:
                raise DecodeError(f"unknown topic {topic!r}; expected one of {', '.join(RAW_SCHEMAS)}")
            record = codec.from_json(RAW_SCHEMAS[topic], envelope["value"])
            events.append(_Event(_event_ms(record), line_no, topic, record))
        except (ValueError, DecodeError) as exc:  # json.JSONDecodeError is a ValueError
            report.invalid += 1
            print(f"line {line_no}: {exc}", file=err)
    events.sort()
    report.records = len(events)
    return events


def replay(lines: Iterable[str], settings: Settings, store: RowSink | None = None, json_out: TextIO | None = None,
           *, knowledge: Any = None, until_ms: int | None = None, err: TextIO | None = None) -> ReplayReport:
    """Replay recorded raw events in event-time order through the ingest and the case engine.

    ``store``: anything with ``insert(table, rows)`` (a migrated streams.storage Store) or None.
    ``json_out``: where to print one JSON line per case (``--json``). ``until_ms``: advance the virtual
    clock to this instant at the end (default: the last event), firing the timers due by then."""
    err = err if err is not None else sys.stderr
    from streams.core.ingest import Ingestor, RejectRecord  # issue 3's ingest: the worker's own code path
    from streams.core.knowledge.knowledge import Knowledge

    knowledge = knowledge if knowledge is not None else Knowledge.load(settings.kb_path, settings.city_dir)
    calendar = WorkCalendar(settings.holiday_override_file or DEFAULT_OVERRIDE_FILE)
    from streams.security import dlq_sealer, pseudonymizer

    # the operator's pseudonym key when configured (pseudonyms then match the live pipeline's)
    ingestor = Ingestor(knowledge, settings.triage_confidence, pseudonyms=pseudonymizer(settings))
    sealer = dlq_sealer(settings) if settings.dlq_key is not None else None
    cases: dict[str, CaseDoc] = {}
    engine = CaseEngine(knowledge, cases, {}, calendar, auto_dispatch=settings.auto_dispatch)
    # residential stations' daily reports: the same book the lifecycle agent keeps, one partition owning all
    zero_reports = ZeroReportBook(knowledge.field, {}, settings.zero_report_deadline, calendar.is_workday,
                                  knowledge.city.unit_of)
    report = ReplayReport(cases=cases)
    sink = _Buffer(store, sealer)
    events = read_events(lines, err, report)

    def collect(out: Outputs) -> None:
        sink.add_outputs(out)
        report.merged += out.merged
        report.alerts += sum(1 for a in out.sla_alerts if a["kind"] in ("sla_yellow", "sla_red"))
        report.rejected_actions += len(out.rejections)
        report.rejections.extend(out.rejections)
        report.notifications.extend(out.notifications)
        for rejection in out.rejections:
            print(f"action {rejection['action_id']} rejected: {rejection['reason']}", file=err)

    def tick(now_ms: int) -> None:
        collect(engine.on_tick(now_ms))
        zero = Outputs()
        for alert in zero_reports.on_tick(now_ms):
            zero.sla_alerts.append({"alert_id": alert["alert_id"], "case_id": alert["case_id"],
                                    "ts_ms": alert["ts_ms"], "stage": alert["stage"], "light": alert["light"],
                                    "kind": alert["kind"], "departments": list(alert["departments"]),
                                    "deadline_ms": alert["deadline_ms"]})
            zero.notifications.append(cast(Notification, zero_reports.notification(alert)))
        report.zero_report_alerts += len(zero.sla_alerts)
        collect(zero)

    triage_records: dict[str, dict[str, Any]] = {}   # what the worker's triage GlobalTable holds

    def from_triage(action: CaseAction, ts_ms: int) -> None:
        """人工分拨立案, as the worker's actions router does it."""
        triage = triage_records.get(str(action.get("triage_id") or ""))
        reason = None
        if action["actor_kind"] != "center":
            reason = "only the centre turns a triage record 人工分拨 into a case"
        elif triage is None:
            reason = f"unknown triage record {action.get('triage_id')!r}"
        else:
            try:
                signal = ingestor.from_triage(triage, ts_ms, action.get("category"), action.get("address"),
                                              action.get("lat"), action.get("lon"), actor=action["actor_id"])
            except RejectRecord as exc:
                reason = f"triage record {action.get('triage_id')!r}: {exc.reason}"
            else:
                report.signals += 1
                sink.add_records([records.signal_input(signal)])
                collect(engine.on_signal(signal))
                return
        report.rejected_actions += 1
        print(f"action {action['action_id']} rejected: {reason}", file=err)

    for event in events:
        tick(event.ts_ms)  # the virtual clock reaches this event: fire due timers
        if event.topic == CASE_ACTIONS and event.record.get("action") == "from_triage":
            report.actions += 1
            from_triage(cast(CaseAction, event.record), event.ts_ms)
            continue
        if event.topic == CASE_ACTIONS:
            report.actions += 1
            # read_events validated the record against the case_action schema: it is a CaseAction
            collect(engine.on_action(cast(CaseAction, event.record)))
            continue
        try:
            result = ingestor.ingest(RAW_SCHEMAS[event.topic], event.record, event.ts_ms)
        except RejectRecord as exc:
            report.unusable += 1
            print(f"line {event.line_no}: {exc}", file=err)
            sink.add_dead_letter(event.topic, event.line_no, str(exc), event.ts_ms, event.record)
            continue
        sink.add_ingest(result)
        for item in result.triage:
            triage_records[item.triage_id] = dict(item.__dict__)
        for station_report in result.station_reports:
            zero_reports.reported(cast(StationReport, station_report))
        report.triage += len(result.triage)
        for signal in result.signals:
            report.signals += 1
            collect(engine.on_signal(signal))
    end = until_ms if until_ms is not None else (events[-1].ts_ms if events else None)
    if end is not None:
        tick(end)
    sink.add_ingest(ingestor.finish())   # the device minutes still open at the end of the recording
    sink.flush()
    if json_out is not None:
        for doc in sorted(cases.values(), key=lambda d: (d["opened_ms"], d["case_id"])):
            json_out.write(json.dumps(case_summary(doc), ensure_ascii=False) + "\n")
    return report
