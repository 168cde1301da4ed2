"""The ClickHouse fixtures themselves: what other areas' tests rely on."""
from __future__ import annotations

import subprocess
import sys

from streams.local.clickhouse import LocalClickHouseServer
from streams.storage import open_store
from streams.storage.chdb import ChdbStore
from streams.storage.server import ServerStore
from streams.storage.store import Store, load_migrations


def test_store_fixture_gives_a_fresh_migrated_database(store: Store, store_engine: str) -> None:
    assert isinstance(store, ChdbStore if store_engine == "chdb" else ServerStore)
    assert store.applied_migrations() == [m.version for m in load_migrations()]
    assert store.query("SELECT count() AS n FROM signals") == [{"n": 0}]


def test_single_engine_fixtures(chdb_store: Store, server_store: Store) -> None:
    assert isinstance(chdb_store, ChdbStore) and isinstance(server_store, ServerStore)
    assert server_store.query("SELECT version() AS v")[0]["v"].startswith("18.16")


def test_store_url_is_usable_by_a_subprocess(store_url: str) -> None:
    code = ("import sys; from streams.storage import open_store; s = open_store(sys.argv[1]); "
            "print(s.migrate()); s.insert('dispatches', [{'dispatch_id': 'd', 'ts_ms': 1}]); s.close()")
    result = subprocess.run([sys.executable, "-c", code, store_url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str([m.version for m in load_migrations()]) in result.stdout
    with open_store(store_url) as opened:  # the subprocess has exited: its chdb lock is released
        assert opened.query("SELECT dispatch_id FROM dispatches FINAL") == [{"dispatch_id": "d"}]


def test_server_fixture_uses_its_own_config_and_ports(clickhouse_server: LocalClickHouseServer) -> None:
    config = (clickhouse_server.base_dir / "config.xml").read_text()
    assert f"<tcp_port>{clickhouse_server.tcp_port}</tcp_port>" in config
    assert "interserver" not in config and "/var/lib/clickhouse" not in config
    assert clickhouse_server.process is not None and clickhouse_server.process.poll() is None
