"""clickhouse-server over the native protocol (clickhouse-driver); the path for a shared store."""
from __future__ import annotations

import threading
from typing import Any

from streams.storage.sql import quote_identifier
from streams.storage.store import DEFAULT_DATABASE, Store, StoreError

# On a cluster: an INSERT returns once every shard has its rows (the sink commits its offsets after it),
# and a subquery over a Distributed table inside a query over another runs once and is sent to the
# shards (GLOBAL) instead of being refused.
CLUSTER_SETTINGS = {"insert_distributed_sync": 1, "distributed_product_mode": "global"}


class ServerStore(Store):
    def __init__(self, host: str, port: int, database: str = DEFAULT_DATABASE, user: str = "default",
                 password: str = "", connect_timeout: float = 5, send_receive_timeout: float = 30,
                 tls: bool = False, ca_file: str | None = None, cluster: str = "") -> None:
        from clickhouse_driver import (
            Client,  # imported here: streams.core never pulls it in
        )

        super().__init__()
        self.database = quote_identifier(database)
        self.cluster = quote_identifier(cluster) if cluster else ""
        self.url = f"clickhouse://{host}:{port}/{database}"
        self._credentials = (user, password, connect_timeout, send_receive_timeout)
        self._tls = (tls, ca_file)   # every node of a cluster is spoken to the same way
        options: dict[str, Any] = dict(host=host, port=port, user=user, password=password,
                                       connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout)
        if tls:   # the native protocol over TLS (the server's tcp_port_secure), certificate verified
            options.update(secure=True, verify=True, ca_certs=ca_file)
        self._lock = threading.RLock()
        self._nodes: list[Store] | None = None
        bootstrap = Client(database="default", **options)
        try:
            self._run(bootstrap, f"CREATE DATABASE IF NOT EXISTS {self.database}")
        finally:
            bootstrap.disconnect()
        self._client = Client(database=database, settings=dict(CLUSTER_SETTINGS) if cluster else None, **options)

    def nodes(self) -> list[Store]:
        """Every node of the cluster (from system.clusters), each a store on the same database; the
        node this store talks to is itself."""
        if not self.cluster:
            return [self]
        if self._nodes is None:
            rows = self.query("SELECT host_address, port, is_local FROM system.clusters WHERE cluster = %(c)s "
                              "ORDER BY shard_num, replica_num", {"c": self.cluster})
            if not rows:
                raise StoreError(f"{self.url}: the server knows no cluster {self.cluster!r} (remote_servers)")
            user, password, connect_timeout, send_receive_timeout = self._credentials
            nodes: list[Store] = []
            for row in rows:
                if row["is_local"]:
                    nodes.append(self)
                else:
                    nodes.append(ServerStore(row["host_address"], row["port"], self.database, user, password,
                                             connect_timeout, send_receive_timeout,
                                             tls=self._tls[0], ca_file=self._tls[1]))
            self._nodes = nodes
        return self._nodes

    def _run(self, client: Any, sql: str, rows: Any = None, with_types: bool = False) -> Any:
        from clickhouse_driver.errors import Error as DriverError

        with self._lock:
            try:
                if rows is not None:
                    return client.execute(sql, rows, types_check=False)
                return client.execute(sql, with_column_types=with_types)
            except (DriverError, OSError, EOFError) as exc:
                client.disconnect()  # the next statement reconnects
                raise StoreError(f"clickhouse-server {self.url}: {exc}\n-- statement:\n{sql[:2000]}") from exc

    def _execute(self, sql: str) -> None:
        self._run(self._client, sql)

    def _select(self, sql: str) -> list[dict[str, Any]]:
        rows, meta = self._run(self._client, sql, with_types=True)
        names = [name for name, _ in meta]
        return [dict(zip(names, (_server_value(v) for v in row), strict=True)) for row in rows]

    def _insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._run(self._client, f"INSERT INTO {quote_identifier(table)} ({', '.join(columns)}) VALUES", rows)

    def close(self) -> None:
        for node in self._nodes or []:
            if node is not self:
                node.close()
        self._nodes = None
        self._client.disconnect()


def _server_value(value: Any) -> Any:
    if isinstance(value, tuple):  # arrays come back as tuples with some settings
        return [_server_value(v) for v in value]
    if isinstance(value, list):
        return [_server_value(v) for v in value]
    return value

