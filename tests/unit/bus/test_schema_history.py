"""Every schema version ever released stays readable; a schema changed without a history entry, or
changed incompatibly, fails here (and in `streams schemas check`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streams.bus.codec import SCHEMAS_DIR, DecodeError, SchemaRegistry, registry
from streams.cli.main import main


def test_every_current_schema_is_in_the_history() -> None:
    assert registry().missing_history() == [], "run `streams schemas freeze` and commit schemas/history/"


def test_every_released_version_is_readable_by_the_current_schemas() -> None:
    codec = registry()
    assert len(codec.writers) > len(codec.by_name), "the history holds an older webhook_delivery version"
    assert codec.unreadable_history(samples=50) == []


def test_the_check_command_passes() -> None:
    assert main(["schemas", "check"]) == 0


def evolved(tmp_path: Path, name: str, field: dict) -> SchemaRegistry:
    """A copy of the shipped schemas (history included) with ``field`` added to ``name``."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    raw = json.loads((target / f"{name}.avsc").read_text(encoding="utf-8"))
    raw["fields"].append(field)
    (target / f"{name}.avsc").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return SchemaRegistry(target)


def test_a_compatible_change_reads_records_written_before_it(tmp_path: Path) -> None:
    new = evolved(tmp_path, "hotline_call", {"name": "district", "type": ["null", "string"], "default": None})
    assert new.missing_history() == ["hotline_call"]          # CI would ask for the history entry
    old_record = {"call_id": "C-1", "line": "12345", "received_at": "2026-11-24T10:00:00+08:00", "caller": "1",
                  "text": "路灯坏了", "address": None, "lat": None, "lon": None, "channel": None}
    written_before = registry().encode("hotline_call", old_record)
    name, record = new.decode(written_before, "hotline_call")
    assert name == "hotline_call" and record == {**old_record, "district": None}
    # and the new version's own records, of course
    assert new.decode(new.encode("hotline_call", record), "hotline_call")[1] == record
    # freezing adds the entry; the old version stays readable
    assert [p.parent.name for p in new.freeze()] == ["hotline_call"]
    again = SchemaRegistry(tmp_path / "schemas")
    assert again.missing_history() == [] and again.unreadable_history() == []
    assert again.decode(written_before, "hotline_call")[1]["district"] is None


def test_an_incompatible_change_is_caught(tmp_path: Path) -> None:
    new = evolved(tmp_path, "dispatch", {"name": "priority", "type": "int"})  # required, no default
    problems = new.unreadable_history()
    assert problems and "dispatch" in problems[0]
    with pytest.raises(DecodeError, match="corrupt Avro body for dispatch"):
        new.decode(registry().encode("dispatch", {
            "dispatch_id": "d", "case_id": "c", "ts_ms": 1, "departments": ["x"], "level": 3, "category_code": "E",
            "category_name": "n", "deadline_ms": 2, "street": "s", "kb_version": "v"}))
