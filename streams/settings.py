"""One typed settings object, read from environment variables (prefix ``CITYGRID_``)
and, optionally, a YAML file named by ``CITYGRID_SETTINGS_FILE``.

Environment variables win over the file; the file wins over the defaults.
"""
from __future__ import annotations

import os
from datetime import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent  # the checkout when running from one; site-packages in an installed wheel


def package_data(packaged: str, checkout: str) -> Path:
    """A file or folder that lives outside ``streams/`` in the repository and that the wheel copies into the
    package (pyproject.toml, ``force-include``): the installed copy ``PACKAGE_DIR/packaged`` first, else the
    checkout's ``REPO_DIR/checkout`` (editable and development installs, which import from the checkout).

    When neither exists the installed location is returned, so the caller's error names where it looked.
    """
    installed = PACKAGE_DIR / packaged
    if installed.exists():
        return installed
    source = REPO_DIR / checkout
    return source if source.exists() else installed


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "citygrid-streams"


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML settings file (keys are the field names, lower case)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CITYGRID_SETTINGS_FILE")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings file must be a mapping of setting -> value")
        return data


# How long ClickHouse keeps each table (docs/security.md "Retention"): personal data no longer than needed.
DEFAULT_RETENTION_DAYS: dict[str, int] = {
    "dead_letters": 30,          # sealed originals of bad records: long enough to fix and reprocess
    "triage": 90,                # raw records awaiting manual triage 人工分拨 (masked)
    "webhook_deliveries": 90,    # delivery attempts
    "inspector_tracks": 90,      # inspectors' GPS fixes (staff location data)
    "zero_reports": 365,
    "sensor_alarms": 730,
    "signals": 730,              # 24 months of reports (callers as keyed pseudonyms)
    "cases": 1826,               # case records 5 years (the archive keeps them longer, outside this store)
    "case_transitions": 1826,
    "dispatches": 1826,
    "sla_alerts": 1826,
}


class Settings(BaseSettings):
    """Every knob of the pipeline. See README "Settings" for the table."""

    model_config = SettingsConfigDict(env_prefix="CITYGRID_", extra="forbid")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description='Kafka bootstrap servers (host:port,...)')
    topic_partitions: int = Field(4, ge=1, description="partitions for topics the pipeline creates")
    app_id: str = Field("citygrid-streams", description='Faust app id: consumer-group and changelog-topic prefix')
    kafka_session_timeout_seconds: float = Field(
        30.0, gt=0, description="a worker that dies is replaced after this long (Kafka consumer session timeout)")
    kafka_request_timeout_seconds: float = Field(
        40.0, gt=0, description="Kafka request timeout; also bounds a stuck seek during Faust recovery after a crash")
    kafka_max_poll_interval_seconds: float = Field(
        300.0, gt=0, description="a consumer that does not poll for this long leaves its group; the worker's "
        "consumers keep polling (paused) while an output is unavailable, so an outage never reaches it")
    topic_prefix: str = Field("", description="prefixes every topic name (isolates tests sharing a broker)")
    topic_replication_factor: int = Field(
        3, ge=1, description="replication factor of every topic the pipeline creates, Faust changelogs included "
        "(the single local dev broker and the tests: 1)")
    topic_min_insync_replicas: int = Field(
        2, ge=1, description="min.insync.replicas of those topics: with acks=all a write survives the loss of "
        "all but this many replicas (dev broker and tests: 1)")
    kafka_max_message_bytes: int = Field(
        1_000_000, ge=10_000, description="largest record the pipeline produces; a derived record above it is "
        "dead-lettered with its input (keep at or below the broker's message.max.bytes)")
    # Input rules (docs/reliability.md): a raw record outside them goes to <topic>.dlq with the reason
    input_max_field_chars: int = Field(10_000, ge=1, description="longest string a raw record's field may hold")
    input_max_items: int = Field(100, ge=1, description="most items an array field of a raw record may hold")
    event_time_max_age_days: float = Field(
        30.0, gt=0, description="a raw record whose event time is older than this, relative to its Kafka "
        "timestamp, is dead-lettered")
    event_time_max_ahead_seconds: float = Field(
        600.0, ge=0, description="a raw record whose event time is further ahead of its Kafka timestamp than "
        "this is dead-lettered")
    # Storage: chdb://PATH (embedded) or clickhouse://host:port/db (server)
    store_url: str = Field("chdb://var/chdb", description="ClickHouse: chdb://PATH (embedded, default) or "
                           "clickhouse://[user[:pw]@]host:port/db (server)")
    store_cluster: str = Field("", description="ClickHouse cluster (a remote_servers name) to shard the tables over: "
                               "local tables on every node plus Distributed tables (clickhouse:// only; "
                               "docs/operations-wall.md)")
    store_batch_rows: int = Field(5000, ge=1,
                                  description="rows per INSERT of the batch writer (streams.storage.writer)")
    store_flush_seconds: float = Field(1.0, gt=0, description="the ClickHouse sink gathers a batch for up to this "
                                       "long after its first record (one INSERT per table per batch); the batch "
                                       "writer flushes at least this often")
    store_buffer_rows: int = Field(200_000, ge=1,
                                   description="rows buffered while ClickHouse is down before back-pressure")
    retention_months: dict[str, int] = Field(default_factory=dict,
                                             description="per-table retention in whole months, e.g. {signals: 24}; "
                                             "overrides retention_days for that table")
    retention_days: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_RETENTION_DAYS),
        description="per-table retention in days (`streams retention`, nightly CronJob); defaults in "
                    "docs/security.md; a table not listed is kept")
    closed_case_retention_hours: float = Field(
        168.0, ge=0, description="closed and void cases leave the worker's live state this long after they ended "
                                 "(they stay in ClickHouse); 0 keeps them")
    # Faust state
    table_store: str = Field("memory://", description="Faust table store: memory:// (dev) or rocksdb:// "
                             "(production; pip extra rocksdb)")
    data_dir: Path = Field(Path("var/worker"), description='worker state dir (Faust tables, RocksDB files)')
    # Knowledge
    kb_path: Path | None = Field(
        None, description="responsibility knowledge base 责任清单 YAML (default: the packaged sample city's)")
    city_dir: Path | None = Field(
        None, description="city data dir: grid, gazetteer, departments, devices (default: packaged Xuhui)")
    holiday_override_file: Path | None = Field(
        None, description="local holiday / 调休 overrides on top of chinese-calendar (YAML)")
    auto_dispatch: bool = Field(True, description="dispatch every registered case by the KB at once (false: the centre "
                                "accepts hotline calls and dispatches all but level-4/immediate routes by action)")
    triage_confidence: float = Field(0.55, ge=0, le=1, description="below this a signal goes to manual triage 人工分拨")
    # Devices (iot.readings)
    iot_lateness_seconds: float = Field(
        30.0, ge=0, description="a reading may arrive this long after a newer one on its partition and still count in "
        "its minute's aggregate (device_minutes); later ones are counted as late and left out of it")
    iot_idle_close_seconds: float = Field(
        60.0, gt=0, description="an iot.readings partition without readings this long moves its event-time clock on by "
        "the idle time, closing the minutes that passes")
    # Field operations
    zero_report_deadline: time = Field(
        time(17, 0), description="residential stations report daily (an item or 无事报平安) by this local time on "
        "working days; a station without one raises a zero_report_missing alert to its street centre")
    # Processing
    case_path: str = Field("lean", pattern="^(lean|faust)$",
                           description="lean: the case path on aiokafka consumers with RocksDB case state "
                           "(streams/agents/casepath.py); faust: the Faust agents and tables (not for "
                           "production: a restart after SIGKILL can skip inputs, docs/reliability.md)")
    case_standbys: bool = Field(False, description="each worker keeps a standby copy of the case state of the "
                                "partitions others own (tails their changelogs), so taking them over is quick "
                                "(off by default: not yet covered by the two-worker test)")
    dedup_lateness_hours: float = Field(24.0, ge=0, description="a case leaves the dedup index once its merge window "
                                        "ended this long before the newest report (late reports still merge)")
    batch_size: int = Field(500, ge=1, description="records per stream.take() batch")
    batch_seconds: float = Field(0.2, gt=0)
    timer_tick_seconds: float = Field(1.0, gt=0)
    crash_at: str = Field("", description="fault-injection tests only: SIGKILL the worker the n-th time it "
                          "reaches a named point, point[:n] (streams/faults.py); empty in production")
    # Observability
    metrics_port: int = Field(9464, description='Prometheus /metrics port of the worker')
    metrics_host: str = Field("127.0.0.1", description="address the metrics port binds (0.0.0.0 for a Prometheus "
                              "elsewhere: behind a NetworkPolicy)")
    web_port: int = Field(6066, description='worker HTTP port: /wall/ (live view JSON), /health/')
    web_host: str = Field("127.0.0.1", description="address the worker HTTP port binds; off loopback /wall/ "
                          "needs CITYGRID_WALL_TOKEN")
    wall_token: SecretStr | None = Field(None, description="bearer token /wall/ asks for (required when web_host is "
                                         "not a loopback address)")
    health_stall_seconds: float = Field(120.0, gt=0, description="/health/ fails when an agent or consumer made no "
                                        "progress for this long")
    log_level: str = Field("info", description='worker log level')
    # Webhooks
    webhooks_file: Path | None = Field(
        None, description="department webhook endpoints YAML (docs/webhooks.md); unset: no webhooks")
    # HTTP gateway (docs/gateway.md)
    gateway_host: str = Field("127.0.0.1", description="address `streams gateway` listens on")
    gateway_port: int = Field(8080, ge=0, le=65535, description="port of `streams gateway`")
    gateway_keys_file: Path | None = Field(None, description="API keys YAML: [{name, key | key_sha256, scopes}] "
                                           "(docs/gateway.md); unset: only the public reads work")
    gateway_in_worker: bool = Field(False, description="run the gateway inside `streams worker` (needed with an "
                                    "embedded chdb store, which one process holds; `make demo` does this)")
    gateway_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body (413 above)")
    gateway_max_record_bytes: int = Field(64 * 1024, ge=256,
                                          description="largest single feed record, JSON bytes (413 above)")
    gateway_max_field_chars: int = Field(10_000, ge=16, description="longest string field of a record (413 above)")
    gateway_rate_limit: str = Field("100/second", description="requests per API key (per client address without "
                                    "a key); 429 above")
    gateway_record_rate_limit: str = Field("100000/second", description="feed records per API key; 429 above")
    gateway_jurisdiction_id: str = Field("", description="Open311 jurisdiction_id this gateway serves; empty: "
                                         "accept any (one jurisdiction)")
    gateway_public_url: str = Field("", description="base URL citizens reach the gateway at (progress links in "
                                    "Open311 answers); empty: the request's own host")
    # Security and privacy (docs/security.md)
    pii_key: SecretStr | None = Field(None, description="secret key of callers' pseudonyms (keyed HMAC-SHA256, ≥ 32 "
                                      "characters); required by the worker (`make demo` generates one)")
    pii_previous_keys: list[SecretStr] = Field(default_factory=list, description="retired pseudonym keys (JSON list): "
                                               "`streams erase` also finds callers under them")
    dlq_key: SecretStr | None = Field(None, description="Fernet key(s) sealing dead-letter originals, newest first, "
                                      "comma-separated; required by the worker (`make demo` generates one)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka transport: PLAINTEXT (local dev only), SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*")
    kafka_sasl_username: str = Field("", description="SASL user (the Kafka principal ACLs name)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (or kafka_sasl_password_file)")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password (a mounted Secret)")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signed the brokers' certificates")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS (optional)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (PEM) for mutual TLS (optional)")
    kafka_ssl_check_hostname: bool = Field(True, description="verify that the broker certificate names the host")
    store_user: str = Field("", description="ClickHouse user (overrides one in store_url)")
    store_password_file: Path | None = Field(
        None, description="file holding the ClickHouse password (a mounted Secret)")
    store_tls: bool = Field(False, description="TLS to the ClickHouse server (native secure port, usually 9440)")
    store_ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that signed the ClickHouse server certificate")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls), file_secret_settings)
