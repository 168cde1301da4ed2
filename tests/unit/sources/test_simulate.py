"""The simulator's field feeds look like the city's: inspectors walk their grids, registered stations report."""
from __future__ import annotations

from datetime import UTC, datetime

from streams.bus.codec import registry
from streams.core.ingest import Ingestor
from streams.core.knowledge.knowledge import Knowledge
from streams.sources.simulate import CityFeeds, places_from_knowledge, patrols_of, record_key


def test_inspectors_walk_their_grids_and_stations_report() -> None:
    kb = Knowledge.load()
    feeds = CityFeeds(3, places_from_knowledge(kb), devices=kb.sample_devices(), patrols=patrols_of(kb),
                      stations=sorted(kb.field.stations))
    ingestor = Ingestor(kb)
    days: dict[str, dict] = {}
    station_reports = 0
    for i, (topic, record) in enumerate(feeds.stream(datetime(2026, 11, 20, 1, tzinfo=UTC), 20, {"field"})):
        if i >= 4000:
            break
        schema = {"field.tracks": "field_track", "field.reports": "field_report"}[topic]
        assert record_key(topic, record) == record[{"field.tracks": "inspector_id",
                                                    "field.reports": "report_id"}[topic]].encode()
        result = ingestor.ingest(schema, registry().from_json(schema, record), 0)
        station_reports += len(result.station_reports)
        for row in result.rows.get("patrol_days", []):
            days[row["inspector_id"]] = row
    assert set(days) == set(kb.field.inspectors) and station_reports > 50
    for row in days.values():
        assert row["dropped"] <= row["fixes"] * 0.05                  # a walk, not teleports
        assert row["distance_m"] > 100 and row["cells_assigned_covered"] >= 1
