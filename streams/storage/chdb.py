"""The embedded engine: chdb, one embedded ClickHouse server per process bound to one data path.

``_ChdbEngine`` holds that process-wide session and its lock; every :class:`ChdbStore` shares it.
chdb answers in JSON; ``_convert`` turns its values into the Python types clickhouse-driver returns,
so rows look the same on both engines.
"""
from __future__ import annotations

import json
import re
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams.storage.sql import quote_identifier
from streams.storage.store import DEFAULT_DATABASE, Store, StoreError


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
            raise StoreError(f"chdb refuses to start in {Path.cwd()}: it holds a config.xml; "
                             "run from another directory")
        from chdb import (
            session as chdb_session,  # imported here: streams.core never pulls it in
        )

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
            {name: _convert(value, ch_type, self._tz) for name, ch_type, value in zip(names, types, row, strict=True)}
            for row in doc["data"]
        ]

    def _execute(self, sql: str) -> None:
        self._raw(sql)

    def _select(self, sql: str) -> list[dict[str, Any]]:
        return self._raw_select(sql)

    def _insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        try:   # orjson: the values went through the column coercers (finite floats, str, int, lists of them)
            body = b"\n".join(map(orjson.dumps, rows)).decode("utf-8")
        except orjson.JSONEncodeError:   # an integer beyond 64 bits: the server says which row it refuses
            encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
            body = "\n".join(map(encode, rows))
        self._raw(f"INSERT INTO {quote_identifier(table)} ({', '.join(columns)}) FORMAT JSONCompactEachRow\n{body}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _ChdbEngine.release()

