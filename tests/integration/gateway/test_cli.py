"""`streams gateway` as an operator starts it: a bad keys file or an embedded store held by another process
stops it at once with a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.local.kafka import free_port
from streams.storage import Store


def run_gateway(env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
    env.update({"CITYGRID_GATEWAY_PORT": str(free_port()), "CITYGRID_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "gateway"], env=env, cwd=cwd, capture_output=True, timeout=120
    )


def test_a_bad_keys_file_is_named(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("- {name: a, key: short, scopes: [read]}\n", encoding="utf-8")
    result = run_gateway(
        {"CITYGRID_GATEWAY_KEYS_FILE": str(keys), "CITYGRID_STORE_URL": f"chdb://{tmp_path / 'chdb'}"}, tmp_path
    )
    assert result.returncode == 2
    assert "keys.yaml: key #1: key" in result.stderr.decode()


def test_a_chdb_store_held_by_another_process_points_to_the_way_out(chdb_store: Store, tmp_path: Path) -> None:
    result = run_gateway({"CITYGRID_STORE_URL": f"chdb://{chdb_store.path}"}, tmp_path)
    assert result.returncode == 2
    assert "CITYGRID_GATEWAY_IN_WORKER" in result.stderr.decode()


def test_new_key_prints_the_key_once_and_only_its_hash_for_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "gateway", "--new-key", "app", "--scope", "open311"],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    out = result.stdout.decode()
    assert result.returncode == 0 and "key_sha256:" in out and "- open311" in out
