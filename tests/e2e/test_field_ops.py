"""Field operations end to end on real Kafka with the real worker: an inspector's GPS track becomes a patrol
day (distance without the jitter, coverage of the assigned grid); residential stations that reported neither an
item nor 无事报平安 by the deadline raise one zero_report_missing alert each, to their street centre."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

import h3
import pytest

from streams.core.knowledge.knowledge import Knowledge
from streams.core.times import CITY_TZ
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import produce_keyed, query, wait_until

# clickhouse-server: the test watches the tables while the worker writes them (chdb locks its path)
pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]



def test_patrol_days_and_missed_zero_reports(kafka: LocalKafka, topic_prefix: str, worker_factory, store_url_factory,
                                             tmp_path: Any) -> None:
    now = datetime.now(CITY_TZ)
    deadline = now + timedelta(seconds=75)
    if deadline.date() != now.date():
        pytest.skip("too close to midnight for a same-day deadline")
    # today is a working day for this test, whatever the calendar says
    override = tmp_path / "holidays.yaml"
    override.write_text(f"holidays: []\nworkdays: [{now.date().isoformat()}]\n", encoding="utf-8")
    store_url = store_url_factory("server")
    kb = Knowledge.load()

    # INS-014 walks its responsibility grid (XH07-G2 around 怡桂苑) for 20 minutes, a fix every 10 s with ±6 m
    # of GPS jitter, after standing at the first corner for 12 minutes (an idle period)
    grid = kb.field.grids[kb.field.inspectors["INS-014"]]
    corners = [h3.cell_to_latlng(c) for c in sorted(grid.cells)]
    rng = random.Random(5)
    start = now.replace(microsecond=0) - timedelta(hours=1)
    fixes, t = [], start
    m_lat, m_lon = 1 / 111_320, 1 / (111_320 * math.cos(math.radians(corners[0][0])))

    def fix(lat: float, lon: float) -> dict[str, Any]:
        return {"inspector_id": "INS-014", "ts": t.isoformat(timespec="seconds"),
                "lat": lat + rng.uniform(-6, 6) * m_lat, "lon": lon + rng.uniform(-6, 6) * m_lon}

    for _ in range(72):                                   # 12 minutes on the spot
        fixes.append(fix(*corners[0]))
        t += timedelta(seconds=10)
    walk = 0.0
    for (a_lat, a_lon), (b_lat, b_lon) in zip(corners, corners[1:], strict=False):
        leg = h3.great_circle_distance((a_lat, a_lon), (b_lat, b_lon), unit="m")
        steps = max(1, int(leg / 12))                    # ~1.2 m/s
        for k in range(1, steps + 1):
            fixes.append(fix(a_lat + (b_lat - a_lat) * k / steps, a_lon + (b_lon - a_lon) * k / steps))
            t += timedelta(seconds=10)
        walk += leg
    records = [("field.tracks", "INS-014", f) for f in fixes]
    # STA-001 says 无事报平安, STA-002 reports an item; the other residential stations say nothing
    records += [("field.reports", "R-1", {"report_id": "R-1", "reporter_id": "STA-001", "reporter_kind": "station",
                                         "reported_at": now.isoformat(timespec="seconds"), "zero_report": True}),
                ("field.reports", "R-2", {"report_id": "R-2", "reporter_id": "STA-002", "reporter_kind": "station",
                                         "reported_at": now.isoformat(timespec="seconds"), "category": "暴露垃圾",
                                         "text": "小区门口垃圾堆没人清", "address": "斜土路1175弄"})]
    produce_keyed(kafka.bootstrap, topic_prefix, records)

    worker = worker_factory(store_url, zero_report_deadline=deadline.strftime("%H:%M:%S"),
                            holiday_override_file=str(override))
    worker.wait_healthy()   # it migrated the store
    expected_missing = {s for s in kb.field.stations if s not in ("STA-001", "STA-002")}

    def alerts() -> list[dict[str, Any]]:
        return query(store_url, "SELECT case_id, ts_ms, departments FROM sla_alerts FINAL "
                                "WHERE kind = 'zero_report_missing'")

    wait_until(lambda: len(alerts()) >= len(expected_missing), 240, "the missed zero-reports' alerts",
               lambda: f"{alerts()}\n{worker.tail()}")
    found = alerts()
    day = now.strftime("%Y%m%d")
    assert sorted(a["case_id"] for a in found) == sorted(f"ZR-{s}-{day}" for s in expected_missing)
    deadline_ms = int(deadline.replace(microsecond=0).timestamp() * 1000)
    assert {a["ts_ms"] for a in found} == {deadline_ms} and all(a["departments"] == ["街道网格中心"] for a in found)

    wait_until(lambda: query(store_url, "SELECT max(fixes) AS n FROM patrol_days FINAL")[0]["n"] == len(fixes), 120,
               "the whole track in the patrol day", worker.tail)
    [day_row] = query(store_url, "SELECT * FROM patrol_days FINAL WHERE inspector_id = 'INS-014'")
    assert 0.85 * walk <= day_row["distance_m"] <= 1.15 * walk, (day_row["distance_m"], walk)
    assert day_row["idle_periods"] == 1 and 660 <= day_row["idle_s"] <= 720
    assert day_row["grid_id"] == grid.id and day_row["cells_assigned"] == len(grid.cells)
    assert day_row["cells_assigned_covered"] >= len(grid.cells) - 1
    [tracks] = query(store_url, "SELECT count() AS n FROM inspector_tracks FINAL WHERE inspector_id = 'INS-014'")
    assert tracks["n"] == len(fixes)
    assert worker.stop() == 0, worker.tail()
