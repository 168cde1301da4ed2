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


async def test_the_worker_and_the_sink_read_records_written_before_a_compatible_change(tmp_path: Path) -> None:
    """A rolling upgrade: records written by the old version are still in flight when the new worker
    (evolved schemas) reads them -- in the ingest adapter and in the ClickHouse sink."""
    from streams.agents.ingest import IngestAdapter
    from streams.bus.topics import CASE_INPUTS, DISPATCHES, HOTLINE_CALLS, TopicNames
    from streams.core.ingest import Ingestor
    from streams.core.knowledge.knowledge import Knowledge
    from streams.settings import Settings
    from streams.sinks.clickhouse import ClickHouseSink
    from streams.testing import TestingSink, TestingSource, run
    from tests.unit.agents.support import clock, fresh_metrics
    from tests.unit.sinks.test_clickhouse import RecordingStore

    evolved(tmp_path, "hotline_call", {"name": "district", "type": ["null", "string"], "default": None})
    target = tmp_path / "schemas"   # and dispatch gains a field with a default too
    raw = json.loads((target / "dispatch.avsc").read_text(encoding="utf-8"))
    raw["fields"].append({"name": "priority", "type": "int", "default": 0})
    (target / "dispatch.avsc").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    new = SchemaRegistry(target)
    old = registry()
    call = {"call_id": "C-OLD", "line": "12345", "received_at": "2026-11-20T09:30:00+08:00", "caller": "1",
            "text": "钦江路15号有6户居室群租，人员很杂，影响居民生活", "address": "钦江路15号",
            "lat": None, "lon": None, "channel": None}
    adapter = IngestAdapter(Ingestor(Knowledge.load()), new, fresh_metrics(), TopicNames("t"), clock=clock)
    source = TestingSource([(HOTLINE_CALLS, None, old.encode("hotline_call", call))], prefix="t")
    sink = await run(adapter.handle, source, TestingSink(prefix="t", codec=new))
    [signal] = sink.values(CASE_INPUTS)
    assert json.loads(signal["signal"])["source_id"] == "C-OLD"

    dispatch = {"dispatch_id": "d-old", "case_id": "XH07-20261120-0a1b2c3d", "ts_ms": 5,
                "departments": ["房管办"], "level": 3, "category_code": "E0601", "category_name": "群租",
                "deadline_ms": 9, "street": "虹梅街道",
                "kb_version": "kb-1"}
    clickhouse = ClickHouseSink(Settings(topic_prefix="t", kafka_bootstrap="127.0.0.1:1"), RecordingStore(), new,
                                fresh_metrics())
    recs = TestingSource([(DISPATCHES, None, old.encode("dispatch", dispatch))], prefix="t").consumer_records()
    await clickhouse.deliver(await clickhouse.prepare(recs))
    [(table, [row])] = clickhouse.store.inserts
    assert table == "dispatches" and row["dispatch_id"] == "d-old" and row["priority"] == 0
