-- citygrid-streams: the operations-wall model. Runs unchanged on chdb (ClickHouse 2x) and on
-- clickhouse-server 18.16: no DateTime64, LowCardinality, TTL or window functions.
-- Every table is a ReplacingMergeTree keyed by an idempotent id so a retried batch leaves no
-- duplicate in FINAL queries; every DateTime is derived from the *_ms column writers send.

CREATE TABLE IF NOT EXISTS signals (
    signal_id String,
    source String,
    source_kind String,
    source_id String,
    ts_ms Int64,
    ingest_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    category_code String,
    category_name String,
    confidence Float64,
    context Array(String),
    lat Nullable(Float64),
    lon Nullable(Float64),
    cell String,
    community String,
    street String,
    street_code String,
    district String,
    address String,
    reporter_id String,
    reporter_kind String,
    handled_on_spot UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, signal_id);

-- Current state of every case: one row per (case_id, version); FINAL keeps the highest version.
-- opened_ms must never change for a case (it picks the partition).
CREATE TABLE IF NOT EXISTS cases (
    case_id String,
    version Int64,
    updated_ms Int64,
    opened_ms Int64,
    updated DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(updated_ms, 1000), 'Asia/Shanghai'),
    opened DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(opened_ms, 1000), 'Asia/Shanghai'),
    category_code String,
    category_name String,
    departments Array(String),
    level UInt8,
    status String,
    origin String,
    street String,
    street_code String,
    community String,
    cell String,
    address String,
    lat Nullable(Float64),
    lon Nullable(Float64),
    reporters UInt32,
    sources Array(String),
    light String,
    deadline_ms Int64,
    rework_count UInt32,
    urge_count UInt32,
    quick_handled UInt8,
    dispatched_by String,
    closed_ms Int64,
    on_time UInt8,
    handling_ms Int64,
    kb_version String,
    stages String
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened)
ORDER BY case_id;

CREATE TABLE IF NOT EXISTS case_transitions (
    event_id String,
    case_id String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    from_stage String,
    to_stage String,
    action String,
    actor_kind String,
    actor_id String,
    spent_ms Int64,
    clock String,
    light String,
    category_code String,
    street String,
    departments Array(String),
    detail String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id);

CREATE TABLE IF NOT EXISTS dispatches (
    dispatch_id String,
    case_id String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    departments Array(String),
    primary_department String,
    level UInt8,
    category_code String,
    category_name String,
    street String,
    deadline_ms Int64,
    kb_version String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, dispatch_id);

CREATE TABLE IF NOT EXISTS sla_alerts (
    alert_id String,
    case_id String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    stage String,
    light String,
    kind String,
    departments Array(String),
    deadline_ms Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, alert_id);

-- Processing-time tables are keyed by their natural id only: a re-delivered record may be
-- stamped with another ts_ms and must still collapse.
CREATE TABLE IF NOT EXISTS dead_letters (
    topic String,
    partition UInt32,
    offset Int64,
    reason String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    original String,
    key String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (topic, partition, offset);

CREATE TABLE IF NOT EXISTS triage (
    triage_id String,
    topic String,
    reason String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    record String,
    best_category String,
    confidence Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY triage_id;

CREATE TABLE IF NOT EXISTS sensor_alarms (
    alarm_id String,
    device_id String,
    building String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    metric String,
    value Float64,
    threshold Float64,
    street String,
    category_code String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, alarm_id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id String,
    department String,
    case_id String,
    kind String,
    idempotency_key String,
    attempt UInt32,
    status String,
    http_status UInt16,
    latency_ms Float64,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    error String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (delivery_id, attempt);

-- 零报告: a station or inspector reporting "nothing to report" for a round.
CREATE TABLE IF NOT EXISTS zero_reports (
    report_id String,
    reporter_id String,
    reporter_kind String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    community String,
    street String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, report_id);

-- GPS fixes of grid inspectors 网格巡查员; (inspector_id, ts_ms) identifies a fix.
CREATE TABLE IF NOT EXISTS inspector_tracks (
    inspector_id String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    lat Float64,
    lon Float64,
    cell String,
    street String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (inspector_id, ts_ms);
