-- What became of every input record (docs/reliability.md, `streams reconcile`): one row per Kafka
-- record an agent or lean consumer took in, written with that record's outputs. `outcome` is the
-- logical topic of its primary output (case.inputs, triage.manual, case.events, ...), 'dlq' when it
-- was dead-lettered, 'rows' when it only fed a table, 'none' when it was filtered (a normal reading,
-- a routine registry change, a re-delivered duplicate). Keyed by position: a replayed record
-- replaces its own row, so FINAL holds exactly one row per input. ts_ms is the Kafka timestamp.
CREATE TABLE IF NOT EXISTS input_ledger (
    topic String,
    partition UInt32,
    offset Int64,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    outcome String,
    outputs UInt32
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (topic, partition, offset);

-- Rows the ClickHouse sink could not write (the server refused them, or they do not fit their
-- table): the rest of their batch is written, these are kept here with the reason. The position
-- is the Kafka record the row came from; row_index its place in that record (store.rows carries many).
CREATE TABLE IF NOT EXISTS sink_dead_letters (
    topic String,
    partition UInt32,
    offset Int64,
    row_index UInt32,
    target_table String,
    reason String,
    ts_ms Int64,
    ts DateTime('Asia/Shanghai') DEFAULT toDateTime(intDiv(ts_ms, 1000), 'Asia/Shanghai'),
    row String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (topic, partition, offset, row_index);
