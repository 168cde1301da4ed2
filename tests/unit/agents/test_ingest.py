"""The ingest adapter through the testing bus: raw records in, case inputs / triage / commands / rows /
dead letters out, no Kafka."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.adapter import reason_label
from streams.agents.ingest import IngestAdapter
from streams.bus.codec import registry
from streams.bus.topics import (
    CAMERA_ALERTS,
    CASE_INPUTS,
    FIELD_REPORTS,
    FIELD_TRACKS,
    HOTLINE_CALLS,
    IOT_COMMANDS,
    IOT_READINGS,
    RAW_SCHEMAS,
    REGISTRY_CHANGES,
    STORE_ROWS,
    TRIAGE,
    dlq,
)
from streams.core.cases.engine import UNLOCATED
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.model import IngestResult, Signal
from streams.metrics import PipelineMetrics
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, NOW_MS, PREFIX, call, clock, fresh_metrics, reading, sample, track

RAW_TOPICS = [t for t in RAW_SCHEMAS if t != "case.actions"]
EVENT_MS = 1_795_138_200_000  # the calls' received_at, as a broker timestamp


def adapter(kb: Knowledge, metrics: PipelineMetrics, ingestor: Ingestor | None = None) -> IngestAdapter:
    return IngestAdapter(ingestor or Ingestor(kb), registry(), metrics, NAMES, clock=clock)


async def ingest(kb: Knowledge, metrics: PipelineMetrics, items: list[Any], **kw: Any) -> TestingSink:
    return await run(adapter(kb, metrics).handle, TestingSource(items, prefix=PREFIX, **kw))


@pytest.mark.parametrize("encoding", ["json", "avro"])
async def test_a_call_becomes_a_signal_on_case_inputs_keyed_by_street(kb: Knowledge, metrics: PipelineMetrics,
                                                                       encoding: str) -> None:
    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, "C-QZ-1", call())], encoding=encoding, timestamp_ms=EVENT_MS)
    assert sink.counts() == {CASE_INPUTS: 1}
    [produced] = sink.produced(CASE_INPUTS)
    assert produced.key == "XH07" and produced.value["kind"] == "signal"
    assert produced.value["action"] is None and produced.value["tick_ms"] is None
    signal = Signal.from_dict(json.loads(produced.value["signal"]))
    assert (signal.category_name, signal.street_code, signal.source_id) == ("群租", "XH07", "C-QZ-1")
    assert signal.ingest_ms == EVENT_MS  # the broker timestamp, when the record has one
    assert sink.sent[0][0] == f"{PREFIX}.{CASE_INPUTS}"  # physical names carry the prefix
    assert sample(metrics, "citygrid_events_in_total", source="hotline", topic=HOTLINE_CALLS) == 1
    assert sample(metrics, "citygrid_classification_confidence_count", source="hotline") == 1


async def test_without_a_timestamp_the_clock_stamps_the_ingest(kb: Knowledge, metrics: PipelineMetrics) -> None:
    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, None, call())])
    assert json.loads(sink.values(CASE_INPUTS)[0]["signal"])["ingest_ms"] == NOW_MS


async def test_unlocated_signals_use_the_cores_key(kb: Knowledge, metrics: PipelineMetrics) -> None:
    """A camera's signal may carry no street: its key is the core's stand-in, the prefix of its case id."""
    from streams.core.cases.engine import make_case_id

    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, None, call())])
    signal = Signal.from_dict(json.loads(sink.values(CASE_INPUTS)[0]["signal"]))
    signal.street_code = None
    assert make_case_id(signal).startswith(f"{UNLOCATED}-")
    from streams.bus.records import signal_input

    assert signal_input(signal).key == UNLOCATED


async def test_low_confidence_goes_to_triage_keyed_by_topic(kb: Knowledge, metrics: PipelineMetrics) -> None:
    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, None, call(text="你好，我想问一下今天天气怎么样"))])
    assert sink.counts() == {TRIAGE: 1}
    [produced] = sink.produced(TRIAGE)
    # a weather question fits no category: triage says so (out of scope) rather than forcing one
    assert produced.key == HOTLINE_CALLS and "out of scope" in produced.value["reason"]
    assert sample(metrics, "citygrid_triage_total", reason=reason_label(produced.value["reason"])) == 1


async def test_schema_failures_and_garbage_are_dead_lettered_with_their_bytes(kb: Knowledge,
                                                                            metrics: PipelineMetrics) -> None:
    missing = json.dumps({"call_id": "C-BAD-1", "line": "12345", "text": "缺字段"}).encode()
    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, "k1", missing), (HOTLINE_CALLS, None, b"\x00\xffnot a record"),
                                      (HOTLINE_CALLS, "C-QZ-1", call())], encoding="json")
    assert sink.counts() == {dlq(HOTLINE_CALLS): 2, CASE_INPUTS: 1}
    first, second = sink.produced(dlq(HOTLINE_CALLS))
    # the original key travels sealed inside the record; the dead letter itself has no Kafka key
    assert first.key is None and first.value["key"] == b"k1" and first.value["original"] == missing
    assert first.value["reason"] == "missing required field 'received_at'"
    assert (first.value["topic"], first.value["partition"], first.value["offset"]) == (HOTLINE_CALLS, 0, 0)
    assert first.value["ts_ms"] == NOW_MS
    assert second.value["original"] == b"\x00\xffnot a record" and second.value["offset"] == 1
    assert sample(metrics, "citygrid_dead_letters_total", topic=HOTLINE_CALLS,
                  reason="missing required field _") == 1


async def test_a_record_the_ingest_refuses_is_dead_lettered(kb: Knowledge, metrics: PipelineMetrics) -> None:
    sink = await ingest(kb, metrics, [(HOTLINE_CALLS, None, call(text="   "))])
    [dead] = sink.values(dlq(HOTLINE_CALLS))
    assert dead["reason"] == "field 'text' is empty: nothing to classify"
    assert sink.counts() == {dlq(HOTLINE_CALLS): 1}


async def test_a_bug_parks_the_record_and_the_batch_goes_on(kb: Knowledge, metrics: PipelineMetrics) -> None:
    class Broken(Ingestor):
        def ingest(self, feed: str, record: dict[str, Any], ingest_ms: int) -> IngestResult:
            if record.get("call_id") == "C-BUG":
                raise ZeroDivisionError("a bug")
            return super().ingest(feed, record, ingest_ms)

    handle = adapter(kb, metrics, Broken(kb)).handle
    sink = await run(handle, TestingSource([(HOTLINE_CALLS, None, call("C-BUG")), (HOTLINE_CALLS, None, call())],
                                           prefix=PREFIX))
    [dead] = sink.values(dlq(HOTLINE_CALLS))
    assert dead["reason"] == "internal error: ZeroDivisionError('a bug')" and dead["offset"] == 0
    assert len(sink.values(CASE_INPUTS)) == 1


@pytest.mark.parametrize("classify_batches,order", [(True, [0, 1, 2]), (False, [0, 1, 2])])
async def test_dead_letters_come_in_input_order(kb: Knowledge, metrics: PipelineMetrics, classify_batches: bool,
                                               order: list[int]) -> None:
    """Classifying a batch at once needs it decoded first, but each input's outcome (its outputs or its
    dead letter) is staged in its own place: dead letters come in input order either way."""
    handle = IngestAdapter(Ingestor(kb), registry(), metrics, NAMES, clock=clock,
                           classify_batches=classify_batches).handle
    sink = await run(handle, TestingSource([(HOTLINE_CALLS, None, call(text=" ")), (HOTLINE_CALLS, None, b"{"),
                                            (HOTLINE_CALLS, None, call(text=""))], prefix=PREFIX))
    assert [d["offset"] for d in sink.values(dlq(HOTLINE_CALLS))] == order


async def test_every_raw_feed_is_read(kb: Knowledge, metrics: PipelineMetrics) -> None:
    items = [
        (HOTLINE_CALLS, None, call()),
        (FIELD_REPORTS, None, {"report_id": "R1", "reporter_id": "insp-007", "reporter_kind": "inspector",
                               "reported_at": "2026-11-20T10:00:00+08:00", "category": "私装地锁",
                               "address": "斜土路1175弄"}),
        (CAMERA_ALERTS, None, {"alert_id": "A1", "camera_id": "CAM-XH-004", "ts": "2026-11-20T12:00:00+08:00",
                               "type": "street_vending", "confidence": 0.9, "snapshot": "s3://cam/a1.jpg"}),
        (IOT_READINGS, "HB-WK-V01", reading("HB-WK-V01", "vibration_mm_s", 3.1)),
        (IOT_READINGS, "LIFT-YGY-03-1", reading("LIFT-YGY-03-1", "ebike_detected", 1)),
        (FIELD_TRACKS, "insp-007", track()),
    ]
    sink = await ingest(kb, metrics, items)
    sources = [json.loads(v["signal"])["source"] for v in sink.values(CASE_INPUTS)]
    assert sources == ["hotline", "field", "camera", "iot"]
    [command] = sink.produced(IOT_COMMANDS)
    assert command.key == "LIFT-YGY-03-1" and command.value["device_id"] == "LIFT-YGY-03-1"
    assert {v["table"] for v in sink.values(STORE_ROWS)} == {"sensor_alarms", "inspector_tracks", "patrol_days"}
    assert len(sink.store_rows("sensor_alarms")) == 2 and len(sink.store_rows("inspector_tracks")) == 1
    assert sample(metrics, "citygrid_events_in_total", source="iot", topic=IOT_READINGS) == 2
    assert sample(metrics, "citygrid_events_in_total", source="field", topic=FIELD_TRACKS) == 1
    assert not any(t.endswith(".dlq") for t in sink.counts())


async def test_store_rows_are_one_record_per_table_and_batch(kb: Knowledge, metrics: PipelineMetrics) -> None:
    tracks = [(FIELD_TRACKS, None, track(ts=f"2026-11-20T10:00:{i:02d}+08:00")) for i in range(10)]
    sink = await run(adapter(kb, metrics).handle, TestingSource(tracks, prefix=PREFIX), batch_size=4)
    # a message per table and batch: inspector_tracks and the inspector's patrol_days row
    assert sink.counts() == {STORE_ROWS: 6} and len(sink.store_rows("inspector_tracks")) == 10


async def test_registry_changes_are_read(kb: Knowledge, metrics: PipelineMetrics) -> None:
    """Outside the 衡复 zone a registry change is routine: read, counted, nothing produced."""
    change = {"change_id": "RG1", "kind": "housing_contract", "ts": "2026-11-20T10:00:00+08:00",
              "address": "钦江路15号", "detail": "一套房登记租客12人"}
    bad = dict(change, kind="marriage")
    sink = await ingest(kb, metrics, [(REGISTRY_CHANGES, None, change), (REGISTRY_CHANGES, None, bad)],
                        encoding="json")
    assert sink.counts() == {dlq(REGISTRY_CHANGES): 1}
    assert "field 'kind' must be" in sink.values(dlq(REGISTRY_CHANGES))[0]["reason"]
    assert sample(metrics, "citygrid_events_in_total", source="registry", topic=REGISTRY_CHANGES) == 2


# ---------------------------------------------------------------- properties
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(topic=st.sampled_from(RAW_TOPICS), values=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
async def test_arbitrary_bytes_never_raise_and_each_is_dead_lettered_once(kb: Knowledge, topic: str,
                                                                       values: list[bytes]) -> None:
    sink = await ingest(kb, fresh_metrics(), [(topic, None, v) for v in values])
    dead = sink.values(dlq(topic))
    assert [d["offset"] for d in dead] == list(range(len(values)))  # exactly one each, in order
    assert [d["original"] for d in dead] == values
    assert set(sink.counts()) == {dlq(topic)}


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
calls = st.fixed_dictionaries({
    "call_id": st.text(min_size=1, max_size=8),
    "line": st.sampled_from(["12345", "12319", "110"]),
    "received_at": st.sampled_from(["2026-11-20T09:30:00+08:00", "2026-11-20 09:30", "yesterday"]),
    "caller": st.text(max_size=12),
    "text": st.one_of(text, st.sampled_from(["钦江路15号有6户居室群租", "路灯坏了", "小区里有人私装地锁"])),
}, optional={
    "address": st.one_of(st.none(), st.sampled_from(["钦江路15号", "斜土路1200号", "南京东路1号"]), text),
    "lat": st.one_of(st.none(), st.floats(allow_nan=False)),
    "lon": st.one_of(st.none(), st.floats(allow_nan=False)),
    "channel": st.one_of(st.none(), text),
    "unknown_field": text,
})


@PROPERTY
@given(record=calls)
async def test_every_call_gives_a_signal_or_a_triage_record_or_exactly_one_dead_letter(
        kb: Knowledge, record: dict[str, Any]) -> None:
    sink = await ingest(kb, fresh_metrics(), [(HOTLINE_CALLS, None, json.dumps(record).encode())])
    counts = sink.counts()
    assert sum(counts.values()) == 1, counts
    assert set(counts) <= {CASE_INPUTS, TRIAGE, dlq(HOTLINE_CALLS)}
