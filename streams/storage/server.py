"""clickhouse-server over the native protocol (clickhouse-driver); the path for a shared store."""
from __future__ import annotations

import threading
from typing import Any

from streams.storage.sql import quote_identifier
from streams.storage.store import DEFAULT_DATABASE, Store, StoreError


class ServerStore(Store):
    def __init__(self, host: str, port: int, database: str = DEFAULT_DATABASE, user: str = "default",
                 password: str = "", connect_timeout: float = 5, send_receive_timeout: float = 30,
                 tls: bool = False, ca_file: str | None = None) -> None:
        from clickhouse_driver import (
            Client,  # imported here: streams.core never pulls it in
        )

        super().__init__()
        self.database = quote_identifier(database)
        self.url = f"clickhouse://{host}:{port}/{database}"
        options: dict[str, Any] = dict(host=host, port=port, user=user, password=password,
                                       connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout)
        if tls:   # the native protocol over TLS (the server's tcp_port_secure), certificate verified
            options.update(secure=True, verify=True, ca_certs=ca_file)
        self._lock = threading.RLock()
        bootstrap = Client(database="default", **options)
        try:
            self._run(bootstrap, f"CREATE DATABASE IF NOT EXISTS {self.database}")
        finally:
            bootstrap.disconnect()
        self._client = Client(database=database, **options)

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
        self._client.disconnect()


def _server_value(value: Any) -> Any:
    if isinstance(value, tuple):  # arrays come back as tuples with some settings
        return [_server_value(v) for v in value]
    if isinstance(value, list):
        return [_server_value(v) for v in value]
    return value

