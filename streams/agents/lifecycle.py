"""The lifecycle adapter: case.inputs (signals, actions, clock ticks) → the case engine → case events,
dispatches, SLA alerts, rejections, webhook deliveries and, once per case and batch, its current state."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from streams.agents.adapter import Adapter, Clock
from streams.bus import records
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.emit import Emitter
from streams.bus.records import Inbound
from streams.bus.topics import CASE_INPUTS, TopicNames
from streams.core.cases.engine import CaseEngine, Outputs
from streams.core.cases.model import CaseDoc, CaseRow, Notification, SlaAlertRow
from streams.core.field import StationReport, ZeroReportBook
from streams.core.model import Signal
from streams.metrics import PipelineMetrics

log = logging.getLogger(__name__)

# notifications -> webhook delivery records
Deliveries = Callable[[Sequence[Mapping[str, Any]]], list[dict[str, Any]]]
# (street code, case.inputs partition) -> does that partition hold the street's inputs?
Owns = Callable[[str, int], bool]


def street_partitions(partitions: int) -> Owns:
    """Which case.inputs partition a street's inputs land in: the producers' default partitioner (murmur2 of
    the key, the street code), as Kafka clients compute it."""
    from aiokafka.partitioner import murmur2

    def owns(street_code: str, partition: int) -> bool:
        return (murmur2(street_code.encode("utf-8")) & 0x7FFFFFFF) % partitions == partition

    return owns


class Journal(Protocol):
    """State that can take back the writes of one input (streams.agents.tables.TableView)."""

    def mark(self) -> None: ...
    def undo(self) -> bool: ...


# case input kinds one partition's engine sends another's -> the engine's handler
CROSS_HANDLERS = {"probe": "on_probe", "void_duplicate": "on_void_duplicate", "absorb": "on_absorb"}


def no_deliveries(notifications: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return []


class WebhookFanout:
    """Department notifications → one webhook delivery record per subscribed endpoint, by the webhooks
    file (docs/webhooks.md), read when the first notification needs it; no file: no deliveries."""

    def __init__(self, webhooks_file: Path | None) -> None:
        self.webhooks_file = webhooks_file
        self._config: Any = None
        self._loaded = False

    @property
    def config(self) -> Any:
        if not self._loaded:
            self._loaded = True
            if self.webhooks_file:
                from streams.sinks.webhooks import load_config

                self._config = load_config(self.webhooks_file)
        return self._config

    def __call__(self, notifications: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not notifications or self.config is None:
            return []
        from streams.sinks.webhooks import build_deliveries

        result: list[dict[str, Any]] = []
        for note in notifications:
            result.extend(build_deliveries(note, self.config))
        return result


def open_case_counts(docs: Iterable[CaseDoc | None]) -> dict[tuple[str, str], int]:
    """(stage, light) -> open cases, for the gauge, from case documents (O(cases))."""
    counts: dict[tuple[str, str], int] = {}
    for doc in docs:
        if not doc:
            continue
        row = CaseEngine.case_row(doc)
        if row["status"] in ("closed", "void"):
            continue
        key = (row["status"], row["light"])
        counts[key] = counts.get(key, 0) + 1
    return counts


class LifecycleAdapter(Adapter):
    """Feeds the case engine. The engine's indexes are rebuilt from its mappings before the first
    input after :meth:`mark_stale` (a rebalance moved partitions)."""

    def __init__(self, engine: CaseEngine, codec: SchemaRegistry, metrics: PipelineMetrics, names: TopicNames,
                 deliveries: Deliveries = no_deliveries, clock: Clock = time.time,
                 closed_case_ttl_ms: int | None = None, purge_every_ms: int = 60_000,
                 zero_reports: ZeroReportBook | None = None, owns: Owns | None = None,
                 journals: Sequence[Journal] = (), rebuild: Callable[[], None] | None = None) -> None:
        super().__init__(codec, metrics, names, clock)
        # how the engine's indexes are derived again after an undo (the lean path: from its live documents)
        self.rebuild_index = rebuild or engine.rebuild
        # The engine's mappings, able to undo one input's writes: an input that fails half-way (an
        # output that cannot be encoded) leaves no state behind, like it leaves no output.
        self.journals = list(journals)
        self.engine = engine
        self.deliveries = deliveries
        self.stale = True
        # Closed and void cases leave the live state this long after they ended (their rows stay in
        # ClickHouse); checked on a partition's clock tick at most every ``purge_every_ms``.
        self.closed_case_ttl_ms = closed_case_ttl_ms
        self.purge_every_ms = purge_every_ms
        self._purged_at: dict[int, int] = {}
        self.zero_reports = zero_reports   # residential stations' daily reports (streams.core.field)
        self.owns = owns or (lambda street_code, partition: True)

    def mark_stale(self) -> None:
        self.stale = True

    async def handle(self, batch: Sequence[Inbound], out: Emitter,
                     focus: Callable[[int], None] | None = None) -> None:
        """``focus(i)`` is called before input ``i`` is applied (the worker points Faust's table writes
        at that input's partition). Each input's state changes and outputs are kept or dropped together."""
        if self.stale:
            self.engine.rebuild()
            self.stale = False
        latest_cases: dict[str, CaseRow] = {}
        for i, inbound in enumerate(batch):
            if focus is not None:
                focus(i)
            out.begin(self.input_record(inbound, CASE_INPUTS))
            for journal in self.journals:
                journal.mark()
            try:
                outputs = self.apply(inbound)
                changed: dict[str, CaseRow] = {}
                self.emit_outputs(out, outputs, changed)
            except Exception as exc:  # the input's fault, or a bug: undo its state, park it, go on
                known = isinstance(exc, (DecodeError, ValueError, KeyError))
                if not known:
                    log.exception("lifecycle: internal error on %s[%s]@%s", inbound.topic, inbound.partition,
                                  inbound.offset)
                if any([journal.undo() for journal in self.journals]):
                    self.rebuild_index()   # its indexes saw the change that was taken back
                self.park(out, CASE_INPUTS, str(exc) if known else f"internal error: {exc!r}")
                continue
            latest_cases.update(changed)
        out.end()
        for row in latest_cases.values():  # the current state once per case and batch
            try:
                out.emit([records.case_record(row)])
            except Exception:  # its next change writes it again; the case itself is in the table
                log.exception("lifecycle: the state row of case %s cannot be sent", row.get("case_id"))

    def apply(self, inbound: Inbound) -> Outputs:
        _, item = self.codec.decode(inbound.value, "case_input")
        if item["kind"] == "signal":
            signal = Signal.from_dict(json.loads(item["signal"]))
            outputs = self.engine.on_signal(signal, inbound.partition)
            if outputs.dispatches:
                self.metrics.ingest_to_dispatch.observe(max(0.0, self.clock() - signal.ingest_ms / 1000))
            return outputs
        if item["kind"] == "action":
            return self.engine.on_action(json.loads(item["action"]), inbound.partition)
        if item["kind"] == "tick":
            outputs = self.engine.on_tick(item["tick_ms"], inbound.partition)
            self._purge(item["tick_ms"], inbound.partition)
            if self.zero_reports is not None:
                outputs.extend(self.zero_report_alerts(item["tick_ms"], inbound.partition))
            return outputs
        if item["kind"] == "erase":
            # `streams erase`: one request per partition; the caller's pseudonyms leave this partition's cases
            request = json.loads(item["action"])
            outputs, changed = self.engine.erase(request["pseudonyms"], request["request_id"], inbound.partition)
            log.info("erasure %s: %d case(s) of partition %d rewritten", request["request_id"], changed,
                     inbound.partition)
            return outputs
        if item["kind"] == "station_report":
            if self.zero_reports is not None:
                self.zero_reports.reported(cast(StationReport, json.loads(item["report"])))
            return Outputs()
        if item["kind"] in CROSS_HANDLERS:   # cross-boundary dedup (CaseEngine.on_probe & co.)
            return cast(Outputs, getattr(self.engine, CROSS_HANDLERS[item["kind"]])(json.loads(item["action"]),
                                                                                 inbound.partition))
        raise DecodeError(f"unknown case input kind {item['kind']!r}")

    def _purge(self, now_ms: int, partition: int) -> None:
        if self.closed_case_ttl_ms is None or now_ms - self._purged_at.get(partition, 0) < self.purge_every_ms:
            return
        self._purged_at[partition] = now_ms
        purged = self.engine.purge(now_ms - self.closed_case_ttl_ms, partition)
        if purged:
            log.info("%d closed case(s) of partition %d left the live state", purged, partition)

    def zero_report_alerts(self, now_ms: int, partition: int) -> Outputs:
        """The stations of this partition's streets that missed their daily report: an sla.alerts record
        (kind zero_report_missing) and a notification to the street centre, each once."""
        assert self.zero_reports is not None
        book = self.zero_reports
        out = Outputs()
        for alert in book.on_tick(now_ms, partition, lambda station: self.owns(station.street_code, partition)):
            row: SlaAlertRow = {"alert_id": alert["alert_id"], "case_id": alert["case_id"], "ts_ms": alert["ts_ms"],
                                "stage": alert["stage"], "light": alert["light"], "kind": alert["kind"],
                                "departments": list(alert["departments"]), "deadline_ms": alert["deadline_ms"]}
            out.sla_alerts.append(row)
            out.notifications.append(cast(Notification, book.notification(alert)))
        return out

    def emit_outputs(self, out: Emitter, outputs: Outputs, latest_cases: dict[str, CaseRow]) -> None:
        for case in outputs.cases:
            latest_cases[case["case_id"]] = case
        for transition in outputs.case_transitions:
            if transition.get("from_stage") == "" and transition.get("to_stage") == "register":
                self.metrics.cases_opened.labels(origin=transition.get("actor_kind") or "").inc()
        for dispatch in outputs.dispatches:
            self.metrics.dispatches.labels(level=str(dispatch["level"])).inc()
        for alert in outputs.sla_alerts:
            if alert["kind"] in ("sla_yellow", "sla_red"):
                self.metrics.sla_transitions.labels(light=alert["light"], stage=alert["stage"]).inc()
        if outputs.merged:
            self.metrics.dedup_merges.inc(outputs.merged)
        out.emit(records.output_records(outputs))
        if outputs.notifications:
            out.emit(map(records.delivery_record, self.deliveries(outputs.notifications)))
