"""The actions router: case.actions → case.inputs, keyed by the street code of the case, so an action
meets its case's state in one partition. An action named by its source record (``source_id``) is
looked up in the source index; one whose case nobody holds is rejected (case.actions.rejected)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from streams.agents.adapter import Adapter, Clock
from streams.bus import records
from streams.bus.codec import DecodeError, SchemaRegistry
from streams.bus.emit import Emitter
from streams.bus.records import Inbound
from streams.bus.topics import CASE_ACTIONS, RAW_SCHEMAS, TopicNames
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.privacy import mask_fields
from streams.metrics import PipelineMetrics

log = logging.getLogger(__name__)

CaseOfSource = Callable[[str], Awaitable[str | None]]
TriageOf = Callable[[str], Awaitable[Mapping[str, object] | None]]   # triage id -> the triage record


class KeyLookup(Protocol):
    """What the lookup reads of an index: a Faust table, or the lean path's SourceIndex (RocksDB)."""

    def get(self, key: str, default: Any = None) -> Any: ...


def source_index_lookup(index: Mapping[str, Any] | KeyLookup, ready: Callable[[], bool], patience: float = 30.0,
                        poll: float = 0.2) -> Callable[[str], Awaitable[Any]]:
    """The case holding a source record. Right after a (re)start the source index (a GlobalTable,
    recovered as standby partitions) may still be loading: an unknown id then waits for it
    (``ready()``, at most ``patience`` seconds) rather than being rejected too early."""

    async def case_of_source(source_id: str) -> str | None:
        case_id = index.get(source_id)
        deadline = time.monotonic() + patience
        while not case_id and not ready() and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            case_id = index.get(source_id)
        return case_id

    return case_of_source


class ActionRouter(Adapter):
    def __init__(self, codec: SchemaRegistry, metrics: PipelineMetrics, names: TopicNames,
                 case_of_source: CaseOfSource, clock: Clock = time.time, triage_of: TriageOf | None = None,
                 ingestor: Ingestor | None = None) -> None:
        super().__init__(codec, metrics, names, clock)
        self.case_of_source = case_of_source
        self.triage_of = triage_of      # the triage records 人工分拨 (a GlobalTable in the worker)
        self.ingestor = ingestor        # turns a triage record the centre completed into a signal

    async def handle(self, batch: Sequence[Inbound], out: Emitter) -> None:
        for inbound in batch:
            self.metrics.event_in("action", CASE_ACTIONS, self.clock())
            out.begin(self.input_record(inbound, CASE_ACTIONS))
            try:
                _, action = self.codec.decode(inbound.value, RAW_SCHEMAS[CASE_ACTIONS], self.rules,
                                              inbound.timestamp_ms)
                action = mask_fields(action)  # a note may quote a phone number: masked before it is passed on
                at_ms = inbound.timestamp_ms or self.now_ms()   # the record's time: a replay decides alike
                if action.get("action") == "from_triage":
                    await self.from_triage(action, out, at_ms)
                    continue
                case_id = action.get("case_id") or await self.case_of_source(action.get("source_id") or "")
                if not case_id:
                    out.emit([records.action_rejected(
                        action, at_ms,
                        f"unknown source_id {action.get('source_id')!r}: no case holds that record yet")])
                    continue
                out.emit([records.action_input(action, case_id)])
            except DecodeError as exc:
                self.park(out, CASE_ACTIONS, str(exc))
            except Exception as exc:  # a bug must not stop the actions: park the record, loudly
                log.exception("actions: internal error on %s[%s]@%s", inbound.topic, inbound.partition, inbound.offset)
                self.park(out, CASE_ACTIONS, f"internal error: {exc!r}")
        out.end()

    async def from_triage(self, action: Mapping[str, Any], out: Emitter, at_ms: int) -> None:
        """人工分拨立案: the centre sets the category and/or place a triage record lacked; the record becomes the
        signal it would have been (case.inputs, keyed by its street), which opens or joins a case as any other."""
        triage_id = str(action.get("triage_id") or "")
        triage = await self.triage_of(triage_id) if self.triage_of is not None else None
        reason = None
        if action.get("actor_kind") != "center":
            reason = "only the centre turns a triage record 人工分拨 into a case"
        elif triage is None or self.ingestor is None:
            reason = f"unknown triage record {triage_id!r}"
        else:
            try:
                signal = self.ingestor.from_triage(triage, at_ms, action.get("category"),
                                                   action.get("address"), action.get("lat"), action.get("lon"),
                                                   actor=str(action.get("actor_id") or ""))
            except RejectRecord as exc:
                reason = f"triage record {triage_id!r}: {exc.reason}"
            else:
                out.emit([records.signal_input(signal)])
                return
        out.emit([records.action_rejected(action, at_ms, reason)])
