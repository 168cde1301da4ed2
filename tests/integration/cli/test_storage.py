"""``streams migrate`` and ``streams retention`` (streams/cli/storage.py) as subprocesses, on both engines."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from streams.storage import open_store
from tests.integration.storage.support import ALL_VERSIONS, month_ms


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
def test_streams_migrate_command(engine_name: str, store_url_factory: Callable[[str], str]) -> None:
    url = store_url_factory(engine_name)
    streams = [sys.executable, "-m", "streams.cli", "migrate", "--store-url", url]
    first = subprocess.run(streams, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"applied {', '.join(ALL_VERSIONS)}" in first.stdout or all(v in first.stdout for v in ALL_VERSIONS)
    second = subprocess.run(streams, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and f"up to date ({ALL_VERSIONS[-1]})" in second.stdout
    if engine_name == "server":
        with open_store(url) as opened:
            assert opened.applied_migrations() == ALL_VERSIONS


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
def test_streams_retention_command(engine_name: str, store_url_factory: Callable[[str], str]) -> None:
    url = store_url_factory(engine_name)
    with open_store(url) as opened:
        opened.migrate()
        opened.insert("signals", [{"signal_id": "old", "ts_ms": month_ms(2020, 1)},
                                  {"signal_id": "new", "ts_ms": month_ms(2099, 1)}])
    env = {**os.environ, "CITYGRID_RETENTION_MONTHS": '{"signals": 12}'}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "retention", "--store-url", url],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "signals: dropped 202001" in result.stdout
    with open_store(url) as opened:
        assert opened.query("SELECT signal_id FROM signals FINAL") == [{"signal_id": "new"}]
