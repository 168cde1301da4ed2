"""ClickHouse storage: one interface over embedded chdb and clickhouse-server.

- ``store``: the :class:`Store` interface, migrations and :func:`open_store`.
- ``sql``: identifiers, literals, parameter substitution, migration statements, value coercion.
- ``chdb`` / ``server``: the two engines.
- ``writer``: the batch writer; ``retention``: dropping old monthly partitions.
"""
from streams.storage.chdb import ChdbStore
from streams.storage.retention import drop_expired_partitions
from streams.storage.server import ServerStore
from streams.storage.sql import RowError
from streams.storage.store import Store, StoreError, open_configured_store, open_store, store_from_settings
from streams.storage.writer import BackPressure, BatchWriter, WriterStopped

__all__ = [
    "BackPressure", "BatchWriter", "ChdbStore", "RowError", "ServerStore", "Store", "StoreError",
    "WriterStopped", "drop_expired_partitions", "open_configured_store", "open_store", "store_from_settings",
]
