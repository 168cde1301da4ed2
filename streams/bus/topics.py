"""Topic names and the Avro schema each one carries."""
from __future__ import annotations

HOTLINE_CALLS = "hotline.calls"
FIELD_REPORTS = "field.reports"
FIELD_TRACKS = "field.tracks"
IOT_READINGS = "iot.readings"
CAMERA_ALERTS = "camera.alerts"
REGISTRY_CHANGES = "registry.changes"
CASE_ACTIONS = "case.actions"
OPEN311_REQUESTS = "open311.requests"  # service requests filed through the gateway's Open311 endpoint

SIGNALS = "signals"
CASE_INPUTS = "case.inputs"
CASE_EVENTS = "case.events"
DISPATCHES = "dispatches"
SLA_ALERTS = "sla.alerts"
TRIAGE = "triage.manual"  # 人工分拨
IOT_COMMANDS = "iot.commands"
ACTIONS_REJECTED = "case.actions.rejected"
WEBHOOK_DELIVERIES = "webhook.deliveries"
WEBHOOK_DLQ = "webhook.deliveries.dlq"
CASES = "cases"          # current case state (compacted)
STORE_ROWS = "store.rows"  # batched rows for tables without a topic of their own
# The lean lifecycle's state (streams.agents.casestate): per case.inputs partition, its documents, sources and
# checkpoints (JSON, compacted; as many partitions as case.inputs); and source id -> case id for every worker.
CASE_STATE = "case.state"
CASE_SOURCES = "case.sources"
STATE_TOPICS = (CASE_STATE, CASE_SOURCES)
DEVICE_EPISODES = "device.episodes"  # alarm episodes opened / closed (keyed by device)
# Inputs whose lean consumer keeps keyed state (streams.bus.stateful) in a changelog: compacted, JSON
# values, one partition per partition of the input, named per app id like Faust's (state_changelog).
STATEFUL_INPUTS = (IOT_READINGS, FIELD_TRACKS)


def state_changelog(app_id: str, topic: str) -> str:
    """The logical name of the changelog of the keyed state kept for input ``topic`` by app ``app_id``."""
    return f"{app_id}-{topic}-state-changelog"

# Raw feeds: what the city's systems produce. Each has a dead-letter topic <name>.dlq.
RAW_SCHEMAS: dict[str, str] = {
    HOTLINE_CALLS: "hotline_call",
    FIELD_REPORTS: "field_report",
    FIELD_TRACKS: "field_track",
    IOT_READINGS: "iot_reading",
    CAMERA_ALERTS: "camera_alert",
    REGISTRY_CHANGES: "registry_change",
    CASE_ACTIONS: "case_action",
    OPEN311_REQUESTS: "open311_request",
}

INTERNAL_SCHEMAS: dict[str, str] = {
    SIGNALS: "signal",
    CASE_INPUTS: "case_input",
    CASE_EVENTS: "case_event",
    DISPATCHES: "dispatch",
    SLA_ALERTS: "sla_alert",
    TRIAGE: "triage",
    IOT_COMMANDS: "iot_command",
    ACTIONS_REJECTED: "action_rejection",
    WEBHOOK_DELIVERIES: "webhook_delivery",
    WEBHOOK_DLQ: "webhook_delivery",
    CASES: "case_state",
    STORE_ROWS: "store_rows",
    DEVICE_EPISODES: "device_episode",
}


# State topics: compacted (the latest record per key is the state). The Faust tables' changelogs
# (`<app id>-<table>-changelog`) and the lean consumers' state changelogs are state topics too.
COMPACTED = frozenset({CASES, CASE_STATE, CASE_SOURCES})
CASES_TABLE = "cases"                # case_id -> case document
SOURCES_TABLE = "case-sources"       # source_id -> case_id
ZERO_REPORTS_TABLE = "zero-reports"  # street -> the stations' zero-report book 零报告
TRIAGE_TABLE = "triage-records"      # triage id -> the triage record 人工分拨 (read by from_triage)
STATE_TABLES = (CASES_TABLE, SOURCES_TABLE, ZERO_REPORTS_TABLE, TRIAGE_TABLE)


def changelog_topics(app_id: str) -> list[str]:
    """The changelog topics Faust creates for the worker's tables (not prefixed: Faust names them by app id)."""
    return [f"{app_id}-{table}-changelog" for table in STATE_TABLES]


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def all_topics() -> list[str]:
    names = list(RAW_SCHEMAS) + list(INTERNAL_SCHEMAS)
    names += [dlq(t) for t in RAW_SCHEMAS] + [dlq(CASE_INPUTS)] + list(STATE_TOPICS)
    return names


class TopicNames:
    """Physical topic names under a prefix: ``TopicNames("t1").name(HOTLINE_CALLS)`` is ``t1.hotline.calls``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = f"{prefix}." if prefix and not prefix.endswith(".") else prefix

    def name(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix):] if self.prefix and physical.startswith(self.prefix) else physical

    def all(self) -> list[str]:
        return [self.name(t) for t in all_topics()]

    def changelogs(self, app_id: str) -> list[str]:
        """The state changelogs of an app (compacted: they keep the latest record per key)."""
        return [self.name(state_changelog(app_id, t)) for t in STATEFUL_INPUTS]
