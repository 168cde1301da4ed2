"""Plain data shared by the domain core, the agents and replay. No Kafka, no Faust.

Times are epoch milliseconds (event time) unless a name says otherwise.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The six stages of the closed loop, in order.
STAGES = ("discover", "register", "dispatch", "handle", "verify", "close")
STAGE_ZH = {"discover": "发现", "register": "立案", "dispatch": "派遣", "handle": "处置", "verify": "核查", "close": "结案"}

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
    def from_dict(cls, data: dict[str, Any]) -> "Signal":
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


@dataclass
class IngestResult:
    """What one raw record turns into. Empty lists are normal (e.g. a GPS fix, a zero-report)."""

    signals: list[Signal] = field(default_factory=list)
    triage: list[Triage] = field(default_factory=list)
    commands: list[DeviceCommand] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra store rows by table
