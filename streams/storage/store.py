"""One storage interface over two ClickHouse engines.

``chdb://PATH[?database=NAME]`` opens the embedded engine (chdb) with its data in PATH (relative
paths are relative to the working directory); ``clickhouse://host:port/db`` talks to a server over
the native protocol (clickhouse-driver). Both run the same SQL: the schema and the queries stay
inside what clickhouse-server 18.16 accepts.

Rows returned by :meth:`Store.query` are plain dicts with the same Python types on both engines:
int, float, str, list, None, ``datetime`` (timezone-aware) and ``date``.

This module holds the interface (:class:`Store`), the migrations and :func:`open_store`; the engines
live in ``chdb.py`` and ``server.py``, SQL text and value coercion in ``sql.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from streams.storage.sql import (
    Coercer,
    RowError,
    column_coercer,
    passes_as_is,
    quote_identifier,
    split_statements,
    substitute,
)

if TYPE_CHECKING:
    pass

DEFAULT_DATABASE = "citygrid"
MIGRATIONS_PACKAGE = "streams.storage.migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StoreError(RuntimeError):
    """The engine refused a statement (bad SQL, unknown table, server down...)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    derived: bool  # filled by the engine from another column (the DateTime beside a *_ms)



@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    statements: list[str]


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(match.group(1), match.group(2), split_statements(entry.read_text("utf-8"))))
    return sorted(found, key=lambda m: m.version)


@dataclass(frozen=True)
class _Schema:
    """What normalize() needs about a table, computed once."""

    names: frozenset[str]
    derived: frozenset[str]
    writable: list[str]
    coercers: list[tuple[str, Coercer, type]]   # (column, coercer, the type that passes as it is)


class Store:
    """Common behaviour; :class:`ChdbStore` and :class:`ServerStore` differ only in transport."""

    url: str
    database: str
    # A ClickHouse cluster (remote_servers name): tables are sharded (streams/storage/cluster.py). "" = one node.
    cluster: str = ""

    def __init__(self) -> None:
        self._columns: dict[str, list[Column]] = {}
        self._schemas: dict[str, _Schema] = {}

    # -- transport (per engine) --------------------------------------------------------------
    def _execute(self, sql: str) -> None:
        raise NotImplementedError

    def _select(self, sql: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------
    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """A statement without result (DDL, ALTER, OPTIMIZE)."""
        self._execute(substitute(sql, params))

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._select(substitute(sql, params))

    def tables(self) -> list[str]:
        rows = self.query("SELECT name FROM system.tables WHERE database = %(db)s ORDER BY name", {"db": self.database})
        return [r["name"] for r in rows]

    def columns(self, table: str) -> list[Column]:
        """Columns of a table (cached: the schema only changes by migrations, which clear it)."""
        cached = self._columns.get(table)
        if cached is None:
            rows = self.query(
                "SELECT name, type, default_kind FROM system.columns "
                "WHERE database = %(db)s AND table = %(table)s ORDER BY position",
                {"db": self.database, "table": table},
            ) if self._has_position() else self.query(
                "SELECT name, type, default_kind FROM system.columns WHERE database = %(db)s AND table = %(table)s",
                {"db": self.database, "table": table},
            )
            if not rows:
                raise RowError(f"unknown table {table!r} in database {self.database!r} (run `streams migrate`?)")
            cached = [
                Column(r["name"], r["type"], r["default_kind"] in ("DEFAULT", "MATERIALIZED", "ALIAS")
                       and r["type"].startswith("DateTime"))
                for r in rows
            ]
            self._columns[table] = cached
        return cached

    _position_known: bool | None = None

    def _has_position(self) -> bool:
        # system.columns.position appeared after 18.16; the server keeps definition order anyway.
        if self._position_known is None:
            rows = self.query(
                "SELECT count() AS n FROM system.columns"
                " WHERE database = 'system' AND table = 'columns' AND name = 'position'"
            )
            self._position_known = bool(rows and rows[0]["n"])
        return self._position_known

    def writable_columns(self, table: str) -> list[str]:
        return [c.name for c in self.columns(table) if not c.derived]

    def _schema(self, table: str) -> _Schema:
        schema = self._schemas.get(table)
        if schema is None:
            columns = self.columns(table)
            writable = [c for c in columns if not c.derived]
            schema = _Schema(
                names=frozenset(c.name for c in columns),
                derived=frozenset(c.name for c in columns if c.derived),
                writable=[c.name for c in writable],
                coercers=[(c.name, column_coercer(f"{table}.{c.name} ({c.type})", c.type), passes_as_is(c.type))
                          for c in writable],
            )
            self._schemas[table] = schema
        return schema

    def normalize(self, table: str, row: dict[str, Any]) -> list[Any]:
        """A row as the list of values for :meth:`writable_columns`, or :class:`RowError`."""
        schema = self._schema(table)
        if not schema.names.issuperset(row):
            raise RowError(f"{table}: unknown column(s) {sorted(set(row) - schema.names)}")
        if not schema.derived.isdisjoint(row):
            raise RowError(f"{table}: {sorted(schema.derived & set(row))} are derived from the *_ms columns; "
                           "send those instead")
        get = row.get
        return [value if type(value := get(name)) is plain else coerce(value)
                for name, coerce, plain in schema.coercers]

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        """One INSERT for all rows (missing keys take '' / 0 / [] / NULL)."""
        if not rows:
            return
        quote_identifier(table)
        values = [self.normalize(table, row) for row in rows]
        self.insert_normalized(table, values)

    def insert_normalized(self, table: str, values: list[list[Any]]) -> None:
        """Rows already passed through :meth:`normalize` (the batch writer validates on add)."""
        if values:
            self._insert_rows(table, self.writable_columns(table), values)

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded in ``schema_migrations``; returns the versions applied now.

        On a cluster, on every node: each migration statement becomes the shard's local table and the
        Distributed table over all shards (streams/storage/cluster.py); each node records its own versions."""
        applied: set[str] = set()
        for node in self.nodes():
            applied.update(node._migrate_node(self.cluster))
        self._columns.clear()
        self._schemas.clear()
        return sorted(applied)

    def _migrate_node(self, cluster: str) -> list[str]:
        from streams.storage.cluster import ClusterLayoutError, translate

        self._execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version String, name String, applied_ms Int64) "
            "ENGINE = ReplacingMergeTree() ORDER BY version"
        )
        done = {r["version"] for r in self.query("SELECT version FROM schema_migrations FINAL")}
        applied = []
        for migration in load_migrations():
            if migration.version in done:
                continue
            for statement in migration.statements:
                try:
                    statements = translate(statement, cluster, self.database) if cluster else [statement]
                except ClusterLayoutError as exc:
                    raise StoreError(f"migration {migration.version}_{migration.name}: {exc}") from exc
                for each in statements:
                    self._execute_migration(each)
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            self._insert_rows("schema_migrations", ["version", "name", "applied_ms"],
                              [[migration.version, migration.name, now_ms]])
            applied.append(migration.version)
        self._columns.clear()
        self._schemas.clear()
        return applied

    _ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)\s", re.IGNORECASE)

    def _execute_migration(self, statement: str) -> None:
        """A migration statement; a column another process (a worker starting beside this one) added first
        is not an error (18.16 has no ADD COLUMN IF NOT EXISTS; CREATE TABLE says IF NOT EXISTS)."""
        try:
            self._execute(statement)
        except StoreError:
            match = self._ADD_COLUMN.match(statement.strip())
            if match is None or not self.query(
                    "SELECT count() AS n FROM system.columns "
                    "WHERE database = %(db)s AND table = %(t)s AND name = %(c)s",
                    {"db": self.database, "t": match.group(1), "c": match.group(2)})[0]["n"]:
                raise

    def applied_migrations(self) -> list[str]:
        """Versions applied (on a cluster: on every node)."""
        per_node = [{r["version"] for r in node.query("SELECT version FROM schema_migrations FINAL")}
                    for node in self.nodes()]
        return sorted(set.intersection(*per_node)) if per_node else []

    def nodes(self) -> list[Store]:
        """The stores of every node holding this store's data: itself, or each node of its cluster."""
        return [self]

    def partition_targets(self, table: str) -> list[tuple[Store, str]]:
        """Where the data parts of ``table`` live, as (node store, table name there): for retention."""
        if not self.cluster:
            return [(self, table)]
        from streams.storage.cluster import local_table

        return [(node, local_table(table)) for node in self.nodes()]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def open_store(url: str, *, user: str | None = None, password: str | None = None, tls: bool = False,
               ca_file: str | None = None, cluster: str = "") -> Store:
    """``chdb://PATH[?database=NAME]`` or ``clickhouse://[user[:password]@]host:port/db``; for a server,
    ``user``/``password`` override the URL's and ``tls`` speaks the native protocol over TLS, verifying
    the server's certificate against ``ca_file`` (or the system's CAs); ``cluster`` (clickhouse:// only) names the
    cluster whose shards hold the tables (``settings.store_cluster``). See :func:`store_from_settings`."""
    parsed = urlparse(url)
    if cluster and parsed.scheme != "clickhouse":
        raise ValueError(f"{url!r}: a sharded store (cluster {cluster!r}) needs clickhouse://, not chdb")
    if parsed.scheme == "chdb":
        from streams.storage.chdb import (
            ChdbStore,  # here, not at the top: the engines import Store from this module
        )

        raw_path = url[len("chdb://"):].split("?", 1)[0]
        if not raw_path:
            raise ValueError(f"{url!r}: chdb:// needs a data path, e.g. chdb://var/chdb")
        database = parse_qs(parsed.query).get("database", [DEFAULT_DATABASE])[0]
        return ChdbStore(Path(raw_path), database)
    if parsed.scheme == "clickhouse":
        from streams.storage.server import ServerStore

        if not parsed.hostname or not parsed.port:
            raise ValueError(f"{url!r}: clickhouse:// needs host:port, e.g. clickhouse://127.0.0.1:9000/citygrid")
        database = parsed.path.lstrip("/") or DEFAULT_DATABASE
        return ServerStore(parsed.hostname, parsed.port, database, user=user or parsed.username or "default",
                           password=password if password is not None else (parsed.password or ""),
                           tls=tls, ca_file=ca_file, cluster=cluster)
    raise ValueError(f"{url!r}: store URL must start with chdb:// or clickhouse://")


def store_from_settings(settings: Any, url: str | None = None) -> Store:
    """The store the settings name, with the server's credentials and TLS: ``store_user``, the password
    from ``store_password_file`` (a mounted Secret), ``store_tls`` and ``store_ca_file``."""
    password = None
    if settings.store_password_file is not None:
        from streams.security import read_secret_file

        password = read_secret_file(settings.store_password_file, "CITYGRID_STORE_PASSWORD_FILE")
    return open_store(url or settings.store_url, cluster=settings.store_cluster, user=settings.store_user or None,
                      password=password, tls=settings.store_tls,
                      ca_file=str(settings.store_ca_file) if settings.store_ca_file else None)


def open_configured_store(settings: Any, url: str | None = None) -> Store:
    """The store the settings name (or ``url`` instead), sharded over ``store_cluster``, with its credentials."""
    return store_from_settings(settings, url)
