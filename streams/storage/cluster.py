"""The sharded layout of the schema on a ClickHouse cluster.

With ``settings.store_cluster`` set (a cluster named in the servers' ``remote_servers``), every table of
the migrations exists twice on every node of the cluster:

- ``<table>_local``: the table as the migration declares it (a ReplacingMergeTree), holding that
  shard's rows;
- ``<table>``: a ``Distributed`` table over the ``_local`` tables of all shards, with the same columns.
  Writers insert into it and the wall reads from it, under the same name as on a single server, so
  no query changes.

The sharding key is a hash of the table's dedup key (its ORDER BY columns, without the DateTime
columns derived from a ``*_ms`` column): every version of a row lands on one shard, where the
ReplacingMergeTree and ``FINAL`` collapse them as on a single server.

Migrations run on each node directly (no ``ON CLUSTER``: that needs ZooKeeper); each node records the
versions it has applied in its own ``schema_migrations``. Everything here is pure text work.
"""
from __future__ import annotations

import re

from streams.storage.sql import quote_identifier

LOCAL_SUFFIX = "_local"

_CREATE = re.compile(r"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s*\((?P<body>.*)\)\s*"
                     r"ENGINE\s*=\s*(?P<engine>.*)$", re.IGNORECASE | re.DOTALL)
_ALTER = re.compile(r"^ALTER\s+TABLE\s+(?P<name>\w+)\s+(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_DROP = re.compile(r"^DROP\s+TABLE\s+(?P<exists>IF\s+EXISTS\s+)?(?P<name>\w+)\s*$", re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+(?P<key>\((?:[^()]|\([^()]*\))*\)|\w+)", re.IGNORECASE)
_DERIVED = re.compile(r"\b(DEFAULT|MATERIALIZED|ALIAS)\b", re.IGNORECASE)


class ClusterLayoutError(ValueError):
    """A migration statement the sharded layout cannot translate."""


def local_table(table: str) -> str:
    return f"{table}{LOCAL_SUFFIX}"


def _split_top_level(text: str) -> list[str]:
    """Comma-separated items, ignoring commas inside parentheses and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return [item for item in items if item]


def shard_key(create_statement: str) -> list[str]:
    """The columns a table is sharded by: its ORDER BY columns minus the derived (DEFAULT) ones."""
    match = _CREATE.match(create_statement.strip())
    if not match:
        raise ClusterLayoutError(f"not a CREATE TABLE statement: {create_statement[:80]!r}")
    name = match.group("name")
    order = _ORDER_BY.search(match.group("engine"))
    if not order:
        raise ClusterLayoutError(f"{name}: no ORDER BY to derive a sharding key from")
    key = order.group("key")
    columns = _split_top_level(key[1:-1]) if key.startswith("(") else [key]
    derived = set()
    for definition in _split_top_level(match.group("body")):
        name_and_rest = definition.split(None, 1)
        if len(name_and_rest) == 2 and _DERIVED.search(name_and_rest[1]):
            derived.add(name_and_rest[0])
    for column in columns:
        if not re.fullmatch(r"\w+", column):
            raise ClusterLayoutError(f"{name}: ORDER BY item {column!r} is not a plain column")
    chosen = [c for c in columns if c not in derived]
    if not chosen:
        raise ClusterLayoutError(f"{name}: every ORDER BY column is derived; no sharding key")
    return chosen


def translate(statement: str, cluster: str, database: str) -> list[str]:
    """The statements to run on every node of the cluster for one migration statement."""
    quote_identifier(cluster)
    quote_identifier(database)
    text = statement.strip()
    if match := _CREATE.match(text):
        name = match.group("name")
        local = local_table(name)
        key = ", ".join(shard_key(text))
        local_create = text[:match.start("name")] + local + text[match.end("name"):]
        return [local_create,
                f"CREATE TABLE IF NOT EXISTS {name} AS {local} "
                f"ENGINE = Distributed({cluster}, {database}, {local}, cityHash64({key}))"]
    if match := _ALTER.match(text):
        name, rest = match.group("name"), match.group("rest")
        # the shards' tables first: the Distributed table must never have a column they lack
        return [f"ALTER TABLE {local_table(name)} {rest}", f"ALTER TABLE {name} {rest}"]
    if match := _DROP.match(text):
        exists = "IF EXISTS " if match.group("exists") else ""
        name = match.group("name")
        return [f"DROP TABLE {exists}{name}", f"DROP TABLE {exists}{local_table(name)}"]
    raise ClusterLayoutError(f"the sharded layout translates CREATE TABLE, ALTER TABLE and DROP TABLE only, "
                             f"not: {text[:80]!r}")
