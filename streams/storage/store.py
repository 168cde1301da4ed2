"""One storage interface over two ClickHouse engines.

``chdb://PATH[?database=NAME]`` opens the embedded engine (chdb) with its data in PATH (relative
paths are relative to the working directory); ``clickhouse://host:port/db`` talks to a server over
the native protocol (clickhouse-driver). Both run the same SQL: the schema and the queries stay
inside what clickhouse-server 18.16 accepts.

Rows returned by :meth:`Store.query` are plain dicts with the same Python types on both engines:
int, float, str, list, None, ``datetime`` (timezone-aware) and ``date``.
"""
from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

DEFAULT_DATABASE = "citygrid"
MIGRATIONS_PACKAGE = "streams.storage.migrations"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StoreError(RuntimeError):
    """The engine refused a statement (bad SQL, unknown table, server down...)."""


class RowError(ValueError):
    """A row does not fit its table (unknown column, wrong type): the writer's bug, never retried."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    derived: bool  # filled by the engine from another column (the DateTime beside a *_ms)


def quote_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def sql_literal(value: Any) -> str:
    """A ClickHouse literal for a query parameter (same text on both engines)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float parameter: {value!r}")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime parameter: give it a timezone")
        return f"toDateTime({int(value.timestamp())})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    raise TypeError(f"unsupported parameter type {type(value).__name__}")


def substitute(sql: str, params: dict[str, Any] | None) -> str:
    """``%(name)s`` placeholders -> literals (client side, identical for both engines)."""
    if params is None:
        return sql
    return sql % {name: sql_literal(value) for name, value in params.items()}


def split_statements(script: str) -> list[str]:
    """Statements of a migration file: ';' ends a statement; '--' comment lines are dropped."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


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


def _zero_value(ch_type: str) -> Any:
    if ch_type.startswith("Nullable("):
        return None
    if ch_type.startswith("Array("):
        return []
    if ch_type == "String":
        return ""
    if ch_type.startswith("Float"):
        return 0.0
    return 0


Coercer = Callable[[Any], Any]


def _coercer(where: str, ch_type: str) -> Coercer:
    """A function turning a Python value into what both drivers accept for ``ch_type``.

    Built once per column (the per-row cost dominates the writer); None means unknown, which
    the contract writes as '' / 0 / [] (NULL only for Nullable).
    """
    zero = _zero_value(ch_type)
    if ch_type.startswith("Nullable("):
        inner = _coercer(where, ch_type[9:-1])
        return lambda value: None if value is None else inner(value)
    if ch_type.startswith("Array("):
        item = _coercer(where, ch_type[6:-1])

        def array(value: Any) -> Any:
            if value is None:
                return []
            if not isinstance(value, (list, tuple)):
                raise RowError(f"{where}: expected a list, got {type(value).__name__}")
            return [item(v) for v in value]
        return array
    if ch_type == "String":
        def string(value: Any) -> Any:
            if type(value) is str:
                return value
            if value is None:
                return ""
            if isinstance(value, str):
                return str(value)
            raise RowError(f"{where}: expected str, got {type(value).__name__} {value!r:.60}")
        return string
    if ch_type.startswith(("Int", "UInt")):
        unsigned = ch_type.startswith("UInt")

        def integer(value: Any) -> Any:
            if value is None:
                return 0
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise RowError(f"{where}: expected int, got {type(value).__name__} {value!r:.60}")
            if unsigned and value < 0:
                raise RowError(f"{where}: negative value {value}")
            return int(value)
        return integer
    if ch_type.startswith("Float"):
        def number(value: Any) -> Any:
            if value is None:
                return zero
            if not isinstance(value, (int, float)):
                raise RowError(f"{where}: expected a number, got {type(value).__name__} {value!r:.60}")
            result = float(value)
            if not math.isfinite(result):
                raise RowError(f"{where}: non-finite {result}")
            return result
        return number

    def unwritable(value: Any) -> Any:
        raise RowError(f"{where}: column type not writable by this store")
    return unwritable


@dataclass(frozen=True)
class _Schema:
    """What normalize() needs about a table, computed once."""

    names: frozenset[str]
    derived: frozenset[str]
    writable: list[str]
    coercers: list[tuple[str, Coercer]]


class Store:
    """Common behaviour; :class:`ChdbStore` and :class:`ServerStore` differ only in transport."""

    url: str
    database: str

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
                "SELECT count() AS n FROM system.columns WHERE database = 'system' AND table = 'columns' AND name = 'position'"
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
                coercers=[(c.name, _coercer(f"{table}.{c.name} ({c.type})", c.type)) for c in writable],
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
        return [coerce(get(name)) for name, coerce in schema.coercers]

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
        """Apply the migrations not yet recorded in ``schema_migrations``; returns the versions applied now."""
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
                self._execute(statement)
            now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
            self._insert_rows("schema_migrations", ["version", "name", "applied_ms"],
                              [[migration.version, migration.name, now_ms]])
            applied.append(migration.version)
        self._columns.clear()
        self._schemas.clear()
        return applied

    def applied_migrations(self) -> list[str]:
        return [r["version"] for r in self.query("SELECT version FROM schema_migrations FINAL ORDER BY version")]

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# ---------------------------------------------------------------------------------------------
# chdb


def _parse_datetime(text: str, ch_type: str, default_tz: ZoneInfo) -> datetime:
    match = re.search(r"'([^']+)'", ch_type)
    tz = ZoneInfo(match.group(1)) if match else default_tz
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)


def _convert(value: Any, ch_type: str, default_tz: ZoneInfo) -> Any:
    """A value of chdb's JSON output -> the Python type clickhouse-driver returns for it."""
    if value is None:
        return None
    if ch_type.startswith("Nullable("):
        return _convert(value, ch_type[9:-1], default_tz)
    if ch_type.startswith("Array("):
        return [_convert(v, ch_type[6:-1], default_tz) for v in value]
    if ch_type.startswith("DateTime"):
        return _parse_datetime(value, ch_type, default_tz)
    if ch_type.startswith("Date"):
        return date.fromisoformat(value)
    if ch_type.startswith(("Int", "UInt")):
        return int(value)
    if ch_type.startswith("Float"):
        return float(value)
    return value


class _ChdbEngine:
    """The process-wide chdb session: chdb runs one embedded server per process, bound to one path."""

    lock = threading.RLock()
    session: Any = None
    path: Path | None = None
    users = 0
    current_database: str | None = None

    @classmethod
    def acquire(cls, path: Path) -> None:
        if (Path.cwd() / "config.xml").exists():
            # chdb (even `import chdb`) would load that file as its server config: paths, ports, locks.
            raise StoreError(f"chdb refuses to start in {Path.cwd()}: it holds a config.xml; run from another directory")
        from chdb import session as chdb_session  # imported here: streams.core never pulls it in

        with cls.lock:
            if cls.session is not None:
                if cls.path != path:
                    raise StoreError(
                        f"chdb already has {cls.path} open in this process; close those stores before opening {path}"
                    )
                cls.users += 1
                return
            path.mkdir(parents=True, exist_ok=True)
            try:
                cls.session = chdb_session.Session(str(path))
            except Exception as exc:
                raise StoreError(f"cannot open chdb at {path}: {exc} (is another process, e.g. a running worker, "
                                 "using this path? chdb locks it; use clickhouse:// to share a store)") from exc
            cls.path = path
            cls.users = 1
            cls.current_database = None

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users <= 0 and cls.session is not None:
                cls.session.close()
                cls.session = None
                cls.path = None
                cls.users = 0


class ChdbStore(Store):
    def __init__(self, path: Path, database: str = DEFAULT_DATABASE) -> None:
        super().__init__()
        self.path = path if path.is_absolute() else Path.cwd() / path
        self.database = quote_identifier(database)
        self.url = f"chdb://{self.path}?database={database}"
        self._closed = False
        self._tz = ZoneInfo("UTC")  # replaced by the engine's own zone below
        _ChdbEngine.acquire(self.path)
        try:
            self._raw(f"CREATE DATABASE IF NOT EXISTS {self.database}", use_database=False)
            self._tz = ZoneInfo(self._raw_select("SELECT timezone() AS tz", use_database=False)[0]["tz"])
        except BaseException:
            self.close()
            raise

    def _raw(self, sql: str, use_database: bool = True, fmt: str = "CSV") -> Any:
        if self._closed:
            raise StoreError(f"{self.url} is closed")
        with _ChdbEngine.lock:
            try:
                if use_database and _ChdbEngine.current_database != self.database:
                    _ChdbEngine.session.query(f"USE {self.database}")
                    _ChdbEngine.current_database = self.database
                return _ChdbEngine.session.query(sql, fmt)
            except Exception as exc:  # chdb raises its own ChdbError/RuntimeError
                raise StoreError(f"chdb: {exc}\n-- statement:\n{sql[:2000]}") from exc

    def _raw_select(self, sql: str, use_database: bool = True) -> list[dict[str, Any]]:
        result = self._raw(sql, use_database=use_database, fmt="JSONCompact")
        payload = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not payload.strip():
            return []
        doc = json.loads(payload)
        names = [m["name"] for m in doc["meta"]]
        types = [m["type"] for m in doc["meta"]]
        return [
            {name: _convert(value, ch_type, self._tz) for name, ch_type, value in zip(names, types, row)}
            for row in doc["data"]
        ]

    def _execute(self, sql: str) -> None:
        self._raw(sql)

    def _select(self, sql: str) -> list[dict[str, Any]]:
        return self._raw_select(sql)

    def _insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
        body = "\n".join(map(encode, rows))
        self._raw(f"INSERT INTO {quote_identifier(table)} ({', '.join(columns)}) FORMAT JSONCompactEachRow\n{body}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _ChdbEngine.release()


# ---------------------------------------------------------------------------------------------
# clickhouse-server


class ServerStore(Store):
    def __init__(self, host: str, port: int, database: str = DEFAULT_DATABASE, user: str = "default",
                 password: str = "", connect_timeout: float = 5, send_receive_timeout: float = 30) -> None:
        from clickhouse_driver import Client  # imported here: streams.core never pulls it in

        super().__init__()
        self.database = quote_identifier(database)
        self.url = f"clickhouse://{host}:{port}/{database}"
        options = dict(host=host, port=port, user=user, password=password,
                       connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout)
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
        return [dict(zip(names, (_server_value(v) for v in row))) for row in rows]

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


def open_store(url: str) -> Store:
    """``chdb://PATH[?database=NAME]`` or ``clickhouse://[user[:password]@]host:port/db``."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        raw_path = url[len("chdb://"):].split("?", 1)[0]
        if not raw_path:
            raise ValueError(f"{url!r}: chdb:// needs a data path, e.g. chdb://var/chdb")
        database = parse_qs(parsed.query).get("database", [DEFAULT_DATABASE])[0]
        return ChdbStore(Path(raw_path), database)
    if parsed.scheme == "clickhouse":
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"{url!r}: clickhouse:// needs host:port, e.g. clickhouse://127.0.0.1:9000/citygrid")
        database = parsed.path.lstrip("/") or DEFAULT_DATABASE
        return ServerStore(parsed.hostname, parsed.port, database, user=parsed.username or "default",
                           password=parsed.password or "")
    raise ValueError(f"{url!r}: store URL must start with chdb:// or clickhouse://")
