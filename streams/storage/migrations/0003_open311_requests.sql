-- Service requests filed through the gateway's Open311 endpoint, as the ingestor read them (no personal
-- data): the gateway finds a request by its id here and follows it to its case through signal_id /
-- cases.sources ('open311:<request_id>'), or to manual triage through triage_id.
CREATE TABLE IF NOT EXISTS open311_requests (
    request_id String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    ingest_ms Int64,
    service_code String,
    service_name String,
    description String,
    address String,
    lat Nullable(Float64),
    lon Nullable(Float64),
    media_url String,
    client String,
    signal_id String,
    triage_id String,
    street String,
    community String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY request_id;
