"""The lean IoT/GPS consumer's batch path through the testing bus: aiokafka records in, the ingest
adapter's outputs out (the consumer and producer themselves run in the e2e tests)."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.agents.ingest import IngestAdapter
from streams.agents.lean import LEAN_RAW_TOPICS, LeanIngest
from streams.bus import clients
from streams.bus.codec import registry
from streams.bus.topics import CASE_INPUTS, FIELD_TRACKS, IOT_COMMANDS, IOT_READINGS, STORE_ROWS, dlq
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.testing import TestingSink, TestingSource, run
from tests.unit.agents.support import NAMES, NOW_MS, PREFIX, clock, fresh_metrics, reading, sample, track

READING_MS = 1_795_140_000_123


def lean(kb: Knowledge, metrics: PipelineMetrics) -> LeanIngest:
    settings = Settings(topic_prefix=PREFIX, app_id="city-test", kafka_bootstrap="127.0.0.1:1")
    adapter = IngestAdapter(Ingestor(kb), registry(), metrics, NAMES, clock=clock, classify_batches=False)
    return LeanIngest(settings, adapter, registry(), metrics)


async def feed(service: LeanIngest, source: TestingSource) -> TestingSink:
    return await run(service.process, source, consumer_records=True)


async def test_it_reads_the_two_high_volume_feeds_in_its_own_group(kb: Knowledge, metrics: PipelineMetrics) -> None:
    service = lean(kb, metrics)
    assert service.physical == [f"{PREFIX}.{IOT_READINGS}", f"{PREFIX}.{FIELD_TRACKS}"]
    assert LEAN_RAW_TOPICS == (IOT_READINGS, FIELD_TRACKS)
    config = clients.batch_consumer(service.settings, f"city-test-{service.group_suffix}", service.max_records)
    assert config["group_id"] == "city-test-lean-ingest" and config["enable_auto_commit"] is False


async def test_readings_and_tracks_become_commands_signals_and_rows(kb: Knowledge, metrics: PipelineMetrics) -> None:
    items = [
        (IOT_READINGS, "LIFT-YGY-03-1", reading("LIFT-YGY-03-1", "ebike_detected", 1)),
        (IOT_READINGS, "HB-WK-V01", reading("HB-WK-V01", "vibration_mm_s", 3.1)),
        (IOT_READINGS, "HB-WK-V01", reading("HB-WK-V01", "vibration_mm_s", 2.0)),  # under threshold: quiet
        (FIELD_TRACKS, "insp-007", track()),
    ]
    sink = await feed(lean(kb, metrics), TestingSource(items, prefix=PREFIX, timestamp_ms=READING_MS))
    [command] = sink.produced(IOT_COMMANDS)
    assert command.key == "LIFT-YGY-03-1" and command.value["command"]
    [signal] = [json.loads(v["signal"]) for v in sink.values(CASE_INPUTS)]
    assert signal["category_name"] == "历史建筑振动超限" and signal["ingest_ms"] == READING_MS  # the record's ms
    assert {v["table"] for v in sink.values(STORE_ROWS)} == {"sensor_alarms", "inspector_tracks", "patrol_days"}
    assert sample(metrics, "citygrid_events_in_total", source="iot", topic=IOT_READINGS) == 3
    assert sample(metrics, "citygrid_events_in_total", source="field", topic=FIELD_TRACKS) == 1


async def test_a_record_without_a_timestamp_is_stamped_by_the_clock(kb: Knowledge, metrics: PipelineMetrics) -> None:
    sink = await feed(lean(kb, metrics), TestingSource(
        [(IOT_READINGS, None, reading("HB-WK-V01", "vibration_mm_s", 3.1))], prefix=PREFIX))
    assert json.loads(sink.values(CASE_INPUTS)[0]["signal"])["ingest_ms"] == NOW_MS


@pytest.mark.parametrize("value,reason", [
    (b"\x00\x01", "not JSON"),
    (json.dumps({"device_id": "NOPE", "ts": "2026-11-20T10:00:00+08:00", "metric": "vibration_mm_s",
                 "value": 9.0}).encode(), "unknown device"),
])
async def test_bad_readings_are_dead_lettered(kb: Knowledge, metrics: PipelineMetrics, value: bytes,
                                              reason: str) -> None:
    sink = await feed(lean(kb, metrics), TestingSource([(IOT_READINGS, "d-1", value)], prefix=PREFIX))
    [dead] = sink.produced(dlq(IOT_READINGS))
    assert reason in dead.value["reason"] and dead.value["original"] == value and dead.value["key"] == b"d-1"
    assert dead.key is None, "the original key (maybe personal data) travels sealed, not as the Kafka key"
    assert set(sink.counts()) == {dlq(IOT_READINGS)}


async def test_dead_letters_follow_the_input_order(kb: Knowledge, metrics: PipelineMetrics) -> None:
    """Each record is decoded and ingested in turn: its dead letter, if any, comes in input order."""
    unknown = reading("NOPE", "vibration_mm_s", 9.0)
    sink = await feed(lean(kb, metrics), TestingSource([(IOT_READINGS, None, unknown), (IOT_READINGS, None, b"{"),
                                                        (IOT_READINGS, None, unknown)], prefix=PREFIX))
    assert [d["offset"] for d in sink.values(dlq(IOT_READINGS))] == [0, 1, 2]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=st.sampled_from(LEAN_RAW_TOPICS), values=st.lists(st.binary(max_size=48), min_size=1, max_size=5))
async def test_arbitrary_bytes_never_raise_and_each_is_dead_lettered_once(kb: Knowledge, topic: str,
                                                                       values: list[bytes]) -> None:
    sink = await feed(lean(kb, fresh_metrics()), TestingSource([(topic, None, v) for v in values], prefix=PREFIX))
    assert [d["original"] for d in sink.values(dlq(topic))] == values
