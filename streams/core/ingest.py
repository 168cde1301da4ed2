"""Raw city feeds -> validated, located, classified signals (or manual triage, device commands,
store rows). One `Ingestor` per worker. IoT readings go through a streams.core.devices
`DeviceProcessor` (aggregates, alarm episodes, lift counters): the worker keeps one per partition of
iot.readings (``new_device_processor``); replay and tests use the Ingestor's own (``device_feed``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TypedDict, Unpack, cast

from streams.core.devices.processor import DEFAULT_LATENESS_MS, DeviceProcessor
from streams.core.field import PatrolProcessor
from streams.core.ids import stable_id
from streams.core.knowledge.classify import Classification
from streams.core.knowledge.knowledge import CTX_COMMITTEE, Knowledge
from streams.core.knowledge.sensors import crowd_level
from streams.core.knowledge.services import attribute_problems, context_of_answers
from streams.core.model import (
    CameraAlert,
    FieldReport,
    FieldTrack,
    HotlineCall,
    IngestResult,
    IotReading,
    Location,
    Open311Request,
    Open311RequestRow,
    RawRecord,
    RegistryChange,
    Signal,
    TableRows,
    Triage,
    ZeroReportRow,
)
from streams.core.privacy import Pseudonymizer, mask_fields, mask_optional, mask_text
from streams.core.reject import RejectRecord as RejectRecord  # re-exported: callers catch it from here
from streams.core.times import BadTimestamp, iso_to_ms

HERITAGE_RENOVATION = "历史建筑擅自装修"
CROWD_CATEGORY = "人群聚集超限"

# Raw feeds by schema name -> the origin name stamped on their triage records and used as the
# namespace of their stable ids (it equals the feed's logical topic; ids minted so far keep it).
FEEDS: dict[str, str] = {
    "hotline_call": "hotline.calls",
    "field_report": "field.reports",
    "field_track": "field.tracks",
    "iot_reading": "iot.readings",
    "camera_alert": "camera.alerts",
    "registry_change": "registry.changes",
    "open311_request": "open311.requests",
}


def _merge_context(*lists: list[str]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out += [x for x in items if x not in out]
    return out


class SignalDetails(TypedDict, total=False):
    """The Signal fields a feed fills beyond the common ones (see Ingestor._signal)."""

    text: str | None
    reporter_id: str | None
    reporter_kind: str | None
    handled_on_spot: bool | None
    photos: list[str] | None
    after_photos: list[str] | None
    level_hint: int | None
    extra: str | None


def _triage_source(feed: str, record: Mapping[str, object]) -> tuple[str, str, str, object, str | None]:
    """(source id, source, source kind, reporter, reporter kind) of a raw record sent to triage."""
    if feed == "hotline_call":
        return str(record["call_id"]), "hotline", str(record.get("line") or "12345"), record.get("caller"), "citizen"
    if feed == "field_report":
        kind = str(record["reporter_kind"])
        return str(record["report_id"]), "field", kind, record["reporter_id"], kind
    if feed == "camera_alert":
        return str(record["alert_id"]), "camera", "camera", record["camera_id"], "camera"
    if feed == "registry_change":
        return str(record["change_id"]), "registry", "registry", None, "registry"
    return str(record.get("request_id") or ""), "open311", "open311", record.get("reporter"), "citizen"


def _event_ms(value: str, key: str) -> int:
    """The event time of a record from its field ``key`` (holding ``value``)."""
    try:
        return iso_to_ms(value)
    except BadTimestamp as exc:
        raise RejectRecord(f"field '{key}': {exc}") from exc


class Ingestor:
    def __init__(self, knowledge: Knowledge, triage_confidence: float = 0.55,
                 pseudonyms: Pseudonymizer | None = None) -> None:
        self.knowledge = knowledge
        self.triage_confidence = triage_confidence  # below it a signal goes to 人工分拨
        # Callers' numbers become keyed pseudonyms (streams.core.privacy). The worker passes the
        # operator's key; without one a random per-process key keeps numbers unrecoverable.
        self.pseudonyms = pseudonyms or Pseudonymizer.ephemeral()
        self.device_feed = self.new_device_processor()   # iot.readings in replay and tests
        self._device_offset = 0
        self.patrol_feed = self.new_patrol_processor()   # field.tracks in replay and tests
        self._fix_offset = 0
        self._classified: dict[str, Classification] = {}  # texts of the current batch, classified at once

    def prepare(self, records: Sequence[RawRecord]) -> None:
        """Classify the free texts of a batch in one go (see TextClassifier.classify_many); the
        following ``ingest`` calls for these records use the results. Purely an optimisation.
        A record with a structured category (a field report's) is not classified: the category wins."""
        texts = list(dict.fromkeys(mask_text(r["text"]) for r in records
                                   if isinstance(r.get("text"), str) and r["text"].strip() and not r.get("category")))
        self._classified = dict(zip(texts, self.knowledge.classify_many(texts), strict=True))

    def _classify(self, text: str) -> Classification:
        cls = self._classified.get(text)
        return cls if cls is not None else self.knowledge.classify(text)

    # ------------------------------------------------------------ dispatch by feed
    def ingest(self, feed: str, record: RawRecord, ingest_ms: int) -> IngestResult:
        """One schema-valid raw record of ``feed`` (a name of FEEDS: the feed's schema) -> signals,
        triage, commands, rows."""
        topic = FEEDS.get(feed)
        if topic is None:
            raise RejectRecord(f"the ingestor does not read feed {feed!r}")
        # the codec checked the record against the feed's schema: it has that feed's shape
        if feed == "hotline_call":
            return self._hotline(topic, cast(HotlineCall, record), ingest_ms)
        if feed == "field_report":
            report = cast(FieldReport, record)
            result = self._field_report(topic, report, ingest_ms)
            station = self.knowledge.field.stations.get(report["reporter_id"])
            if report["reporter_kind"] == "station" and station is not None:
                # 有事报事、无事报平安: an item or a zero-report, either counts for the day's deadline
                result.station_reports.append({"station_id": station.id, "street_code": station.street_code,
                                               "ts_ms": _event_ms(report["reported_at"], "reported_at")})
            return result
        if feed == "field_track":
            return self._field_track(topic, cast(FieldTrack, record), ingest_ms)
        if feed == "iot_reading":
            return self._iot_reading(topic, cast(IotReading, record), ingest_ms)
        if feed == "camera_alert":
            return self._camera_alert(topic, cast(CameraAlert, record), ingest_ms)
        if feed == "open311_request":
            return self._open311_request(topic, cast(Open311Request, record), ingest_ms)
        return self._registry_change(topic, cast(RegistryChange, record), ingest_ms)

    # ------------------------------------------------------------ helpers
    def _signal(self, topic: str, source: str, source_kind: str, source_id: str, ts_ms: int, ingest_ms: int,
                category_code: str, confidence: float, context: list[str], location: Location,
                **extra_fields: Unpack[SignalDetails]) -> Signal:
        category = self.knowledge.taxonomy.by_code[category_code]
        return Signal(
            signal_id=stable_id("sig", topic, source_id), source=source, source_kind=source_kind,
            source_id=source_id, ts_ms=ts_ms, ingest_ms=ingest_ms, category_code=category.code,
            category_name=category.name, confidence=round(float(confidence), 4),
            context=_merge_context(context, location.context), lat=location.lat, lon=location.lon,
            cell=location.cell, community=location.community, street=location.street,
            street_code=location.street_code, district=location.district, address=mask_optional(location.address),
            **extra_fields)

    def _triage(self, topic: str, source_id: str, ts_ms: int, record: Mapping[str, object], reasons: list[str],
                best: Classification | None = None) -> Triage:
        # the raw record is kept for the person triaging it, with numbers in its free text masked
        return Triage(triage_id=stable_id("tri", topic, source_id), topic=topic, reason=mask_text("; ".join(reasons)),
                      ts_ms=ts_ms, record=json.dumps(mask_fields(record), ensure_ascii=False, sort_keys=True),
                      best_category=best.category_code if best else None,
                      confidence=best.confidence if best else None)

    def _low_confidence(self, cls: Classification) -> str | None:
        """Why the classification cannot route the record by itself (None: it can)."""
        if cls.out_of_scope:
            return (f"out of scope: the text fits no category of the taxonomy (out-of-scope score "
                    f"{cls.out_of_scope_score:.2f}; nearest category {cls.category_name} {cls.confidence:.2f})")
        if cls.confidence < self.triage_confidence:
            return (f"low classification confidence {cls.confidence:.2f} < {self.triage_confidence:.2f}"
                    f" (best guess {cls.category_name})")
        return None

    # ------------------------------------------------------------ hotline.calls
    def _hotline(self, topic: str, record: HotlineCall, ingest_ms: int) -> IngestResult:
        ts_ms = _event_ms(record["received_at"], "received_at")
        # numbers are masked before anything reads the text: what is classified is what is kept
        # (a phone number's digits are noise to the classifier)
        text = mask_text(record["text"])
        if not text or not text.strip():
            raise RejectRecord("field 'text' is empty: nothing to classify")
        reporter = self.pseudonyms.caller(record["caller"])
        cls = self._classify(text)
        location, where_not = self.knowledge.locate(record.get("lat"), record.get("lon"), record.get("address"), text)
        reasons = [r for r in (self._low_confidence(cls), where_not and f"unknown location: {where_not}") if r]
        if reasons or location is None:
            masked = dict(record, caller=reporter)
            return IngestResult(triage=[self._triage(topic, record["call_id"], ts_ms, masked, reasons, cls)])
        signal = self._signal(topic, "hotline", record["line"], record["call_id"], ts_ms, ingest_ms,
                              cls.category_code, cls.confidence, cls.context, location, text=text,
                              reporter_id=reporter, reporter_kind="citizen",
                              extra=json.dumps({"channel": record.get("channel"), "keyword_hits": cls.keyword_hits,
                                                "alternatives": cls.alternatives}, ensure_ascii=False))
        return IngestResult(signals=[signal])

    # ------------------------------------------------------------ field.reports
    def _field_report(self, topic: str, record: FieldReport, ingest_ms: int) -> IngestResult:
        ts_ms = _event_ms(record["reported_at"], "reported_at")
        text = mask_text((record.get("text") or "").strip())
        location, where_not = self.knowledge.locate(record.get("lat"), record.get("lon"), record.get("address"),
                                                    text or None)
        if record.get("zero_report"):
            # 零报告 "有事报事，无事报平安": proof the inspector/station looked; no signal.
            loc = location or Location()
            # Columns of the `zero_reports` table (streams/storage/migrations).
            zero: ZeroReportRow = {
                "report_id": record["report_id"], "reporter_id": record["reporter_id"],
                "reporter_kind": record["reporter_kind"], "ts_ms": ts_ms,
                "community": loc.community or "", "street": loc.street or ""}
            return IngestResult(rows={"zero_reports": [zero]})
        cls: Classification | None = None
        category_ref = record.get("category")
        if category_ref:
            # A structured category from the inspector's device wins over the text.
            category = self.knowledge.category(category_ref)
            if category is None:
                raise RejectRecord(f"field 'category': {category_ref!r} is neither a taxonomy code "
                                   "nor a category name")
            code, confidence = category.code, 1.0
            context = self.knowledge.read_context(text) if text else []
        elif text:
            cls = self._classify(text)
            code, confidence, context = cls.category_code, cls.confidence, cls.context
        else:
            raise RejectRecord("field report has neither 'category' nor 'text'")
        reasons = [r for r in ((self._low_confidence(cls) if cls else None),
                               where_not and f"unknown location: {where_not}") if r]
        if reasons or location is None:
            triage = self._triage(topic, record["report_id"], ts_ms, record, reasons, cls)
            triage.best_category, triage.confidence = code, confidence
            return IngestResult(triage=[triage])
        if record["reporter_kind"] == "committee":
            context = _merge_context(context, [CTX_COMMITTEE])
        signal = self._signal(topic, "field", record["reporter_kind"], record["report_id"], ts_ms, ingest_ms, code,
                              confidence, context, location, text=text or None,
                              reporter_id=record["reporter_id"],
                              reporter_kind=record["reporter_kind"], handled_on_spot=record.get("handled_on_spot"),
                              photos=record.get("photos"), after_photos=record.get("after_photos"))
        return IngestResult(signals=[signal])

    # ------------------------------------------------------------ field.tracks
    def new_patrol_processor(self) -> PatrolProcessor:
        """A processor for one partition of field.tracks (the worker keeps one per assigned partition)."""
        return PatrolProcessor(self.knowledge.city, self.knowledge.field)

    def _field_track(self, topic: str, record: FieldTrack, ingest_ms: int) -> IngestResult:
        """The fix's inspector_tracks row and its inspector's patrol day so far (patrol_days)."""
        ts_ms = _event_ms(record["ts"], "ts")
        tracks: list[dict[str, object]] = []
        self.patrol_feed.process(record["inspector_id"], ts_ms, record["lat"], record["lon"], self._fix_offset, tracks)
        self._fix_offset += 1
        rows: dict[str, TableRows] = {"inspector_tracks": tracks}
        patrol = self.patrol_feed.flush()
        if patrol:
            rows["patrol_days"] = [dict(row) for row in patrol]
        return IngestResult(rows=rows)

    # ------------------------------------------------------------ iot.readings
    def new_device_processor(self, lateness_ms: int = DEFAULT_LATENESS_MS) -> DeviceProcessor:
        """A processor for one partition of iot.readings (the worker keeps one per assigned partition)."""
        return DeviceProcessor(self.knowledge, self._signal, FEEDS["iot_reading"], lateness_ms)

    def _iot_reading(self, topic: str, record: IotReading, ingest_ms: int) -> IngestResult:
        """Aggregates, alarm episodes and lift counters over every reading this Ingestor has seen (in the
        order given: replay sorts by event time). The worker runs them per partition instead."""
        result = IngestResult()
        self.device_feed.process(record, self._device_offset, ingest_ms, result)
        self._device_offset += 1
        return result

    def finish(self) -> IngestResult:
        """The end of a replay: every open device minute is closed and written."""
        result = IngestResult()
        self.device_feed.finish(result)
        return result

    # ------------------------------------------------------------ camera.alerts
    def _camera_alert(self, topic: str, record: CameraAlert, ingest_ms: int) -> IngestResult:
        ts_ms = _event_ms(record["ts"], "ts")
        camera = self.knowledge.devices.cameras.get(record["camera_id"])
        if camera is None:
            raise RejectRecord(f"unknown camera {record['camera_id']!r} (not in the device registry)")
        kind = self.knowledge.kb.camera_types.get(record["type"])
        if kind is None:
            reason = f"camera alert type {record['type']!r} has no category in the KB"
            return IngestResult(triage=[self._triage(topic, record["alert_id"], ts_ms, record, [reason])])
        category = self.knowledge.taxonomy.by_code[kind.category_code]
        if record["confidence"] < kind.min_confidence:
            reason = f"camera confidence {record['confidence']:.2f} < {kind.min_confidence:.2f} for {record['type']}"
            triage = self._triage(topic, record["alert_id"], ts_ms, record, [reason])
            triage.best_category, triage.confidence = category.code, record["confidence"]
            return IngestResult(triage=[triage])
        facts: dict[str, object] = {"camera_id": camera.id, "type": record["type"], "area": camera.area}
        level_hint = None
        if category.name == CROWD_CATEGORY:
            count = record.get("count")
            if count is None:
                raise RejectRecord("crowd alert without 'count'")
            thresholds = self.knowledge.kb.crowd_areas.get(camera.area or "", self.knowledge.kb.crowd_default)
            level_hint = crowd_level(int(count), thresholds)
            facts.update(count=count, thresholds=list(thresholds), level=level_hint)
            if level_hint is None and self.knowledge.crowd_plan(camera.area) is None:
                return IngestResult()   # below the area's attention level: a normal crowd
            # below it with response plans in the KB: still a count the case engine reads (an open crowd
            # case steps down as the crowd thins; with none open, nothing happens)
        snapshot = record.get("snapshot")
        photos = [snapshot] if snapshot else None
        signal = self._signal(topic, "camera", "camera", record["alert_id"], ts_ms, ingest_ms, category.code,
                              record["confidence"], [], camera.location, reporter_id=camera.id,
                              reporter_kind="camera", photos=photos, level_hint=level_hint,
                              extra=json.dumps(facts, ensure_ascii=False))
        return IngestResult(signals=[signal])

    # ------------------------------------------------------------ registry.changes
    def _registry_change(self, topic: str, record: RegistryChange, ingest_ms: int) -> IngestResult:
        ts_ms = _event_ms(record["ts"], "ts")
        location, where_not = self.knowledge.locate(None, None, record["address"])
        if location is None:
            return IngestResult(triage=[self._triage(topic, record["change_id"], ts_ms, record,
                                                     [f"unknown location: {where_not}"])])
        if "heritage" not in location.context:
            return IngestResult()   # outside the 衡复 zone a contract/scope change is routine
        # 风貌保护: a housing-contract or business-scope change hints at a renovation -> warn 街道管理办.
        category = self.knowledge.category(HERITAGE_RENOVATION)
        assert category is not None
        signal = self._signal(topic, "registry", "registry", record["change_id"], ts_ms, ingest_ms, category.code,
                              1.0, [], location, reporter_kind="registry",
                              extra=json.dumps({"kind": record["kind"], "detail": mask_optional(record.get("detail"))},
                                               ensure_ascii=False))
        return IngestResult(signals=[signal])

    # ------------------------------------------------------------ the centre's way out of 人工分拨
    def from_triage(self, triage: Mapping[str, object], ingest_ms: int, category: str | None = None,
                    address: str | None = None, lat: float | None = None, lon: float | None = None,
                    actor: str | None = None) -> Signal:
        """The signal a triage record becomes when the centre sets what it lacked: the category (a taxonomy code
        or name; default: the classifier's best guess) and/or the place (an address and/or coordinates;
        default: the record's own). Its ids are those the record would have had (a re-sent action changes
        nothing). Raises RejectRecord when the record still cannot be routed (the reason says what to set)."""
        topic = str(triage.get("topic") or "")
        feed = next((f for f, t in FEEDS.items() if t == topic), None)
        try:
            record = json.loads(str(triage.get("record") or ""))
        except ValueError as exc:
            raise RejectRecord(f"triage record {triage.get('triage_id')!r} holds no readable record") from exc
        if feed is None or not isinstance(record, dict):
            raise RejectRecord(f"triage record {triage.get('triage_id')!r} is not from a raw feed ({topic!r})")
        chosen = category or (str(triage["best_category"]) if triage.get("best_category") else None)
        found = self.knowledge.category(chosen) if chosen else None
        if found is None:
            raise RejectRecord(f"set a category: {chosen!r} is not a taxonomy code or name" if chosen
                               else "set a category: the record has none")
        text = str(record.get("text") or record.get("description") or "").strip()
        if address or lat is not None:
            location, where_not = self.knowledge.locate(lat, lon, address)
        else:
            location, where_not = self.knowledge.locate(record.get("lat"), record.get("lon"),
                                                        record.get("address") or record.get("address_string"),
                                                        text or None)
        if location is None:
            raise RejectRecord(f"set a location: {where_not}")
        time_field = next(f for f in ("received_at", "reported_at", "requested_at", "ts") if record.get(f))
        ts_ms = _event_ms(str(record[time_field]), time_field)
        source_id, source, source_kind, reporter, reporter_kind = _triage_source(feed, record)
        context = self.knowledge.read_context(text) if text else []
        if source_kind == "committee":
            context = _merge_context(context, [CTX_COMMITTEE])
        facts = {"triage_id": triage.get("triage_id"), "registered_by": actor, "category_set": bool(category),
                 "location_set": bool(address or lat is not None)}
        return self._signal(topic, source, source_kind, str(source_id), ts_ms, ingest_ms, found.code, 1.0, context,
                            location, text=text or None, reporter_id=str(reporter) if reporter else None,
                            reporter_kind=reporter_kind, extra=json.dumps(facts, ensure_ascii=False))

    # ------------------------------------------------------------ open311.requests
    def _open311_request(self, topic: str, record: Open311Request, ingest_ms: int) -> IngestResult:
        """A citizen's request from a civic app (Open311): the app names the category (service_code), the
        description is the citizen's text; answers to the service's questions add context flags. Always
        leaves an ``open311_requests`` row (the request as filed, without personal data) so the request
        can be looked up by its id whatever became of it."""
        ts_ms = _event_ms(record["requested_at"], "requested_at")
        request_id = record["request_id"]
        category = self.knowledge.category(record["service_code"])
        if category is None or category.code not in self.knowledge.kb.rules:
            raise RejectRecord(f"field 'service_code': {record['service_code']!r} is not a service of this city")
        answers = record.get("attributes") or {}
        problems = attribute_problems(self.knowledge, category.code, answers)
        if problems:
            raise RejectRecord("; ".join(problems))
        text = mask_text((record.get("description") or "").strip())   # the citizen's text, numbers masked
        address = record.get("address_string") or record.get("address_id")
        location, where_not = self.knowledge.locate(record.get("lat"), record.get("lon"), address, text or None)
        context = _merge_context(self.knowledge.read_context(text) if text else [],
                                 context_of_answers(self.knowledge, category.code, answers))
        row: Open311RequestRow = {
            "request_id": request_id, "ts_ms": ts_ms, "ingest_ms": ingest_ms, "service_code": category.code,
            "service_name": category.name, "description": text, "address": mask_text(address or ""),
            "lat": record.get("lat"), "lon": record.get("lon"), "media_url": record.get("media_url") or "",
            "client": record["client"], "signal_id": "", "triage_id": "", "street": "", "community": ""}
        if location is None:
            triage = self._triage(topic, request_id, ts_ms, record, [f"unknown location: {where_not}"])
            triage.best_category, triage.confidence = category.code, 1.0
            row["triage_id"] = triage.triage_id
            return IngestResult(triage=[triage], rows={"open311_requests": [row]})
        facts = {"client": record["client"], "service_code": category.code, "attributes": answers,
                 "jurisdiction_id": record.get("jurisdiction_id")}
        media_url = record.get("media_url")
        signal = self._signal(topic, "open311", "open311", request_id, ts_ms, ingest_ms, category.code, 1.0,
                              context, location, text=text or None,
                              reporter_id=record.get("reporter") or f"app:{record['client']}",
                              reporter_kind="citizen", photos=[media_url] if media_url else None,
                              extra=json.dumps(facts, ensure_ascii=False))
        row["signal_id"], row["street"] = signal.signal_id, location.street or ""
        row["community"], row["address"] = location.community or "", location.address or row["address"]
        return IngestResult(signals=[signal], rows={"open311_requests": [row]})
