"""The simulated city's field feeds look like the city's: inspectors walk their responsibility grids, registered
stations report items and 无事报平安 (streams/sources/scenario.py with the city's field.yaml)."""
from __future__ import annotations

from datetime import datetime

from streams.bus.codec import registry
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.core.times import CITY_TZ
from streams.sources.scenario import ScenarioConfig, scenario_for


def test_inspectors_walk_their_grids_and_stations_report() -> None:
    kb = Knowledge.load()
    scenario = scenario_for(kb, 3, ScenarioConfig(malformed_share=0.0), sources=["field"])
    ingestor = Ingestor(kb)
    days: dict[str, dict] = {}
    station_reports = 0
    start = int(datetime(2026, 11, 20, 8, tzinfo=CITY_TZ).timestamp() * 1000)
    for record in scenario.timeline(start, count=6000):
        assert isinstance(record.value, dict)
        schema = {"field.tracks": "field_track", "field.reports": "field_report"}[record.topic]
        result = ingestor.ingest(schema, registry().from_json(schema, record.value), 0)
        station_reports += len(result.station_reports)
        for row in result.rows.get("patrol_days", []):
            days[row["inspector_id"]] = row
    assert set(days) == set(kb.field.inspectors) and station_reports > 50
    for row in days.values():
        assert row["dropped"] <= max(2, row["fixes"] * 0.25)   # a walk (some noisy fixes filtered), not teleports
        assert row["distance_m"] > 50 and row["cells_assigned_covered"] >= 1
