"""ClickHouse storage: one interface over embedded chdb and clickhouse-server (see store.py)."""
from streams.storage.retention import drop_expired_partitions
from streams.storage.store import ChdbStore, RowError, ServerStore, Store, StoreError, open_store
from streams.storage.writer import BackPressure, BatchWriter, WriterStopped

__all__ = [
    "BackPressure", "BatchWriter", "ChdbStore", "RowError", "ServerStore", "Store", "StoreError",
    "WriterStopped", "drop_expired_partitions", "open_store",
]
