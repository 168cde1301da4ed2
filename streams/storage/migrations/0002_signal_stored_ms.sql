-- When the sink wrote the signal row: stored_ms - ingest_ms is the ingest → ClickHouse latency
-- (freshness of the wall; the benchmark's p50/p99). 0 for rows written before this migration.
ALTER TABLE signals ADD COLUMN stored_ms Int64 DEFAULT 0;
