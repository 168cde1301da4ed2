"""The embedded engine's own rules: one chdb path per process, paths, locks, a stray config.xml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.storage import StoreError, open_store


def test_one_chdb_path_per_process(chdb_path: Path, tmp_path: Path) -> None:
    first = open_store(f"chdb://{chdb_path}?database=a_one")
    try:
        with pytest.raises(StoreError, match="already has"):
            open_store(f"chdb://{tmp_path / 'other'}")
        second = open_store(f"chdb://{chdb_path}?database=a_two")  # same path, another database: shared session
        second.close()
        assert first.query("SELECT currentDatabase() AS db") == [{"db": "a_one"}]
    finally:
        first.close()
    other = open_store(f"chdb://{tmp_path / 'other'}")  # free again once every store on the path is closed
    other.close()


def test_relative_chdb_path_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("chdb://var/chdb") as opened:
        assert opened.path == tmp_path / "var" / "chdb"
    assert (tmp_path / "var" / "chdb").is_dir()


def test_chdb_path_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from streams.storage import open_store; "
         f"s = open_store('chdb://{tmp_path / 'held'}'); print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="another process"):
            open_store(f"chdb://{tmp_path / 'held'}")
    finally:
        holder.kill()
        holder.wait()
    with open_store(f"chdb://{tmp_path / 'held'}") as reopened:  # free once the holder is gone
        assert reopened.query("SELECT 1 AS one") == [{"one": 1}]


def test_chdb_refuses_a_working_directory_with_config_xml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.xml").write_text("<clickhouse/>")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="config.xml"):
        open_store(f"chdb://{tmp_path / 'data'}")
