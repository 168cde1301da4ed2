"""Plain data shared by the domain core, the agents and replay. No Kafka, no Faust.

Times are epoch milliseconds (event time) unless a name says otherwise.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NotRequired, TypedDict

# The six stages of the closed loop, in order.
STAGES = ("discover", "register", "dispatch", "handle", "verify", "close")
STAGE_ZH = {"discover": "发现", "register": "立案", "dispatch": "派遣", "handle": "处置", "verify": "核查",
            "close": "结案"}

# Response levels: 4 = residential workstation 居民区工作站, 3 = street centre 街道网格中心,
# 2 = district centre 区网格中心, 1 = city 市级.
LEVELS = (1, 2, 3, 4)

# Location context flags that routing reads.
CTX_COMPOUND = "compound"          # inside a residential compound 小区内
CTX_STREET_FRONT = "street_front"  # a street-front business 沿街商铺
CTX_STALL = "stall"                # an unlicensed stall 无证摊贩
CTX_HERITAGE = "heritage"          # in the 衡复 historic-conservation zone
CTX_DECIBEL = "decibel"            # the caller asks for a noise measurement 分贝检测


@dataclass
class Location:
    lat: float | None = None
    lon: float | None = None
    cell: str | None = None          # grid unit cell (H3 index)
    community: str | None = None     # 居委/社区
    street: str | None = None        # 街道/镇 (Chinese name)
    street_code: str | None = None   # stable code, also the partition key of case inputs
    district: str | None = None
    address: str | None = None       # normalised address
    context: list[str] = field(default_factory=list)


@dataclass
class Signal:
    """One validated, located, classified observation: the unit that dedup merges into cases."""

    signal_id: str
    source: str        # hotline | field | camera | iot | registry
    source_kind: str   # 12345 | 12319 | inspector | station | committee | camera | sensor | registry
    source_id: str     # id of the raw record (call_id, report_id, alert_id, ...)
    ts_ms: int         # event time
    ingest_ms: int     # when the pipeline first saw the raw record (latency metrics)
    category_code: str
    category_name: str
    confidence: float
    context: list[str] = field(default_factory=list)
    lat: float | None = None
    lon: float | None = None
    cell: str | None = None
    community: str | None = None
    street: str | None = None
    street_code: str | None = None
    district: str | None = None
    address: str | None = None
    text: str | None = None
    reporter_id: str | None = None
    reporter_kind: str | None = None
    handled_on_spot: bool | None = None
    photos: list[str] | None = None
    after_photos: list[str] | None = None
    level_hint: int | None = None
    extra: str | None = None  # JSON object of source-specific facts (sensor value, camera count, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def extra_dict(self) -> dict[str, Any]:
        """Parsed ``extra`` (cached: dedup asks for it for every candidate case)."""
        cached = self.__dict__.get("_extra_cache")
        if cached is None or cached[0] is not self.extra:
            cached = (self.extra, json.loads(self.extra) if self.extra else {})
            self.__dict__["_extra_cache"] = cached
        return cached[1]


@dataclass
class Triage:
    """A record that needs a person (人工分拨): never dropped."""

    triage_id: str
    topic: str
    reason: str
    ts_ms: int
    record: str  # JSON of the raw record
    best_category: str | None = None
    confidence: float | None = None


@dataclass
class DeviceCommand:
    command_id: str
    device_id: str
    ts_ms: int
    command: str
    reading_ts: str | None = None


# Rows of any one store table (what a sink inserts): plain JSON-able dicts, typed per table below
# and in streams.core.cases.model.
TableRows = Sequence[Mapping[str, object]]


class ZeroReportRow(TypedDict):
    """A row of ``zero_reports``: 零报告, an inspector or station looked and found nothing."""

    report_id: str
    reporter_id: str
    reporter_kind: str
    ts_ms: int
    community: str
    street: str


class InspectorTrackRow(TypedDict):
    """A row of ``inspector_tracks``: one GPS fix; a fix outside the district has an empty street."""

    inspector_id: str
    ts_ms: int
    lat: float
    lon: float
    cell: str
    street: str


class SensorAlarmRow(TypedDict):
    """A row of ``sensor_alarms``: a sensor over its threshold, or a lift's e-bike detection."""

    alarm_id: str
    device_id: str
    building: str
    ts_ms: int
    metric: str
    value: float
    threshold: float
    street: str
    category_code: str


class DeviceEpisodeRow(TypedDict):
    """A ``device.episodes`` record and ``device_episodes`` row: an alarm episode opened or closed.
    ``version`` orders the two (1 opened, 2 closed) so the store keeps the closed one."""

    episode_id: str
    device_id: str
    metric: str
    building: str
    street: str
    category_code: str
    status: str            # open | closed
    ts_ms: int             # event time of the change
    opened_ms: int
    closed_ms: int         # 0 while open
    peak: float
    peak_ms: int
    duration_ms: int
    threshold: float
    clear_level: float
    signal_id: str
    version: int


@dataclass
class IngestResult:
    """What one raw record turns into. Empty lists are normal (e.g. a GPS fix, a zero-report)."""

    signals: list[Signal] = field(default_factory=list)
    triage: list[Triage] = field(default_factory=list)
    commands: list[DeviceCommand] = field(default_factory=list)
    rows: dict[str, TableRows] = field(default_factory=dict)  # extra store rows by table
    episodes: list[DeviceEpisodeRow] = field(default_factory=list)  # alarm episodes opened/closed
    # a registered residential station reported (an item or 无事报平安): streams.core.field.StationReport
    station_reports: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- raw feeds
# Schema-valid records of the raw feeds as the codec decodes them (schemas/<feed>.avsc). Nullable
# fields may be missing from a record built by hand, so they are read with .get().
RawRecord = Mapping[str, Any]  # a record of some feed, before the feed's name says which


class HotlineCall(TypedDict):
    call_id: str
    line: str                           # 12345 | 12319
    received_at: str
    caller: str                         # the phone number: pseudonymised at once, never stored in clear
    text: str
    address: NotRequired[str | None]
    lat: NotRequired[float | None]
    lon: NotRequired[float | None]
    channel: NotRequired[str | None]


class FieldReport(TypedDict):
    report_id: str
    reporter_id: str
    reporter_kind: str                  # inspector | station | committee
    reported_at: str
    text: NotRequired[str | None]
    category: NotRequired[str | None]   # taxonomy code or name from the inspector's device
    address: NotRequired[str | None]
    lat: NotRequired[float | None]
    lon: NotRequired[float | None]
    photos: NotRequired[list[str] | None]
    handled_on_spot: NotRequired[bool | None]
    after_photos: NotRequired[list[str] | None]
    zero_report: NotRequired[bool | None]


class FieldTrack(TypedDict):
    inspector_id: str
    ts: str
    lat: float
    lon: float


class IotReading(TypedDict):
    device_id: str
    ts: str
    metric: str
    value: float


class CameraAlert(TypedDict):
    alert_id: str
    camera_id: str
    ts: str
    type: str
    confidence: float
    count: NotRequired[int | None]
    snapshot: NotRequired[str | None]


class Open311Request(TypedDict):
    """open311.requests: filed through the gateway's Open311 endpoint; no personal data (a pseudonym only)."""

    request_id: str
    service_code: str
    requested_at: str
    client: str                         # the API key's name (the app)
    jurisdiction_id: NotRequired[str | None]
    lat: NotRequired[float | None]
    lon: NotRequired[float | None]
    address_string: NotRequired[str | None]
    address_id: NotRequired[str | None]
    description: NotRequired[str | None]
    media_url: NotRequired[str | None]
    attributes: NotRequired[dict[str, list[str]] | None]
    reporter: NotRequired[str | None]


class Open311RequestRow(TypedDict):
    """A row of ``open311_requests``: the request as the ingestor read it, and what it became."""

    request_id: str
    ts_ms: int
    ingest_ms: int
    service_code: str
    service_name: str
    description: str
    address: str
    lat: float | None
    lon: float | None
    media_url: str
    client: str
    signal_id: str               # the signal it became ('' when triaged)
    triage_id: str               # its manual-triage record ('' when it became a signal)
    street: str
    community: str


class RegistryChange(TypedDict):
    change_id: str
    ts: str
    address: str
    kind: str
    detail: NotRequired[str | None]
