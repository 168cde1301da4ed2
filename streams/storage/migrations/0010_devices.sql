-- Devices at city scale (issue 13): per-device one-minute aggregates and alarm episodes.

-- One row per device, metric and minute, written once when the minute closes (the worker's watermark:
-- newest event time on the partition minus the allowed lateness). A replayed partition writes the same
-- rows again, which the ReplacingMergeTree collapses; queries read FINAL. `building` and `threshold`
-- (0 for metrics without one) are copied from the registry so the wall needs no join.
CREATE TABLE IF NOT EXISTS device_minutes (
    device_id String,
    metric String,
    minute_ms Int64,
    minute DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(minute_ms, 1000), 'Asia/Shanghai'),
    n UInt32,
    min Float64,
    max Float64,
    sum Float64,
    last Float64,
    building String,
    threshold Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (device_id, metric, minute);

-- Alarm episodes (hysteresis): a row when one opens (version 1) and when it closes (version 2: peak and
-- duration final); FINAL keeps the newer.
CREATE TABLE IF NOT EXISTS device_episodes (
    episode_id String,
    device_id String,
    metric String,
    building String,
    street String,
    category_code String,
    status String,
    ts_ms Int64,
    opened_ms Int64,
    opened DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(opened_ms, 1000), 'Asia/Shanghai'),
    closed_ms Int64,
    peak Float64,
    peak_ms Int64,
    duration_ms Int64,
    threshold Float64,
    clear_level Float64,
    signal_id String,
    version UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened)
ORDER BY episode_id;
