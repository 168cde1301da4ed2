-- Patrol workload 巡查工作量 (issue 13): one row per inspector and local day, rewritten as the day goes on;
-- version = fixes received that day, so FINAL keeps the latest. Distances have the GPS jitter filtered out
-- (streams/core/field.py); cells are unit cells, assigned = the inspector's responsibility grid 责任网格.
CREATE TABLE IF NOT EXISTS patrol_days (
    inspector_id String,
    day_ms Int64,
    day DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(day_ms, 1000), 'Asia/Shanghai'),
    grid_id String,
    street String,
    distance_m Float64,
    moving_s UInt32,
    idle_s UInt32,
    idle_periods UInt32,
    fixes UInt32,
    dropped UInt32,
    cells_covered UInt32,
    cells_assigned UInt32,
    cells_assigned_covered UInt32,
    first_ms Int64,
    last_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (inspector_id, day);
