"""The lean IoT path end to end on real Kafka with the real worker: keyed readings → one-minute aggregates in
ClickHouse, one alarm episode (one signal, one case) for a building that hovers around its threshold, lift
commands and one case per lift and day — across a SIGKILL of the worker mid-stream."""
from __future__ import annotations

import collections
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from streams.bus.codec import registry
from streams.local.kafka import LocalKafka
from tests.e2e.helpers import consume_all, produce_keyed, query, wait_rows, wait_until

# clickhouse-server: the test watches the tables while the worker writes them (chdb locks its path)
pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse_server]
CITY = timezone(timedelta(hours=8))
LIFTS = ["LIFT-YGY-03-1", "LIFT-JN-12-1", "LIFT-LS-05-1"]


def reading(device: str, metric: str, value: float, at: datetime) -> dict[str, Any]:
    return {"device_id": device, "metric": metric, "value": value, "ts": at.isoformat(timespec="seconds")}


def produce_readings(bootstrap: str, prefix: str, readings: list[dict[str, Any]]) -> None:
    """As the gateway and the simulator produce them: keyed by device id."""
    produce_keyed(bootstrap, prefix, [("iot.readings", r["device_id"], r) for r in readings])


def test_readings_to_minutes_episodes_and_cases_across_a_kill(kafka: LocalKafka, topic_prefix: str, worker_factory,
                                                               store_url_factory) -> None:
    store_url = store_url_factory("server")
    settings = {"iot_lateness_seconds": "2", "iot_idle_close_seconds": "1"}
    start = datetime.now(CITY).replace(second=0, microsecond=0) - timedelta(minutes=30)
    # 武康大楼 (二类: threshold 2.5 mm/s, clears at 0.75 x after 300 s) hovers around its threshold for four
    # minutes, a reading every 2 s; each lift detects an e-bike twice (a case comes with the third of a day)
    hover = [reading("HB-WK-V01", "vibration_mm_s", 2.7 if i % 2 else 2.3, start + timedelta(seconds=2 * i))
             for i in range(120)]
    lifts = [reading(lift, "ebike_detected", 1.0, start + timedelta(minutes=1, seconds=20 * k))
             for k in range(2) for lift in LIFTS]
    stranger = reading("NO-SUCH-DEVICE", "vibration_mm_s", 1.0, start)
    produce_readings(kafka.bootstrap, topic_prefix, hover + lifts + [stranger])

    worker = worker_factory(store_url, **settings)
    wait_rows(worker, timeout=180, cases=1, device_minutes=2, dead_letters=1)
    commands = consume_all(kafka.bootstrap, f"{topic_prefix}.iot.commands", 6, timeout=60)
    assert len(commands) == 6, "every detection announces at once"

    # killed mid-stream; the rest of the episode, the calm that closes it and each lift's third detection
    worker.kill()
    later = start + timedelta(minutes=4)
    more = [reading("HB-WK-V01", "vibration_mm_s", 2.6, later + timedelta(seconds=2 * i)) for i in range(30)]
    calm = [reading("HB-WK-V01", "vibration_mm_s", 0.6, later + timedelta(minutes=1, seconds=10 * i))
            for i in range(45)]
    third = [reading(lift, "ebike_detected", 1.0, later + timedelta(minutes=3)) for lift in LIFTS]
    produce_readings(kafka.bootstrap, topic_prefix, more + calm + third)

    restarted = worker_factory(store_url, **settings)
    wait_rows(restarted, timeout=240, device_episodes=1, cases=3)   # the episode closed, a case per lift
    def explain() -> str:
        episodes = consume_all(kafka.bootstrap, f"{topic_prefix}.device.episodes", 10, timeout=5)
        return (f"device.episodes: {[registry().decode(m.value)[1] for m in episodes]}\n"
                f"device_episodes: {query(store_url, 'SELECT * FROM device_episodes')}\n{restarted.tail(40)}")

    closed_sql = "SELECT count() AS n FROM device_episodes FINAL WHERE status = 'closed'"
    wait_until(lambda: query(store_url, closed_sql)[0]["n"] == 1, 120, "the episode to close", explain)
    wait_until(lambda: query(store_url, "SELECT count() AS n FROM device_minutes FINAL WHERE device_id = 'HB-WK-V01'")
               [0]["n"] >= 11, 120, "the vibration's minutes (idle partitions close theirs)")
    assert restarted.stop() == 0, restarted.tail()

    # one episode, closed with its peak and duration, one signal and one case for it
    [episode] = query(store_url, "SELECT status, peak, duration_ms, signal_id, opened_ms FROM device_episodes FINAL")
    assert episode["status"] == "closed" and episode["peak"] == 2.7
    first_over = int(datetime.fromisoformat(hover[1]["ts"]).timestamp() * 1000)   # 2.7 > 2.5
    assert episode["opened_ms"] == first_over and episode["duration_ms"] >= 300_000
    signals = query(store_url, "SELECT signal_id, category_name, reporter_id FROM signals FINAL")
    vibration = [s for s in signals if s["category_name"] == "历史建筑振动超限"]
    assert [s["signal_id"] for s in vibration] == [episode["signal_id"]]
    assert vibration[0]["reporter_id"] == "HB-WK-V01"
    cases = query(store_url, "SELECT category_name, origin FROM cases FINAL")
    assert {c["origin"] for c in cases} == {"sensor"}
    by_category = collections.Counter(c["category_name"] for c in cases)
    assert by_category == {"历史建筑振动超限": 1, "电动车进电梯": 3}, by_category
    ebike = sorted(s["reporter_id"] for s in signals if s["category_name"] == "电动车进电梯")
    assert ebike == sorted(LIFTS), "one case per lift and day, its count kept across the kill"

    # every minute of the vibration once, with exactly the readings sent in it
    sent: collections.Counter[int] = collections.Counter()
    for r in hover + more + calm:
        ms = int(datetime.fromisoformat(r["ts"]).timestamp() * 1000)
        sent[ms - ms % 60_000] += 1
    rows = query(store_url, "SELECT minute_ms, n, max, building, threshold FROM device_minutes FINAL "
                            "WHERE device_id = 'HB-WK-V01' ORDER BY minute_ms")
    assert {r["minute_ms"]: r["n"] for r in rows} == {m: n for m, n in sent.items()
                                                      if m in {r["minute_ms"] for r in rows}}
    assert len(rows) >= len(sent) - 1 and {(r["building"], r["threshold"]) for r in rows} == {("武康大楼", 2.5)}
    raw_rows = query(store_url, "SELECT count() AS n FROM device_minutes WHERE device_id = 'HB-WK-V01'")
    assert raw_rows[0]["n"] >= len(rows)   # written more than once across the kill, the same content (FINAL above)
    [dead] = query(store_url, "SELECT reason FROM dead_letters FINAL WHERE topic = 'iot.readings'")
    assert "unknown device" in dead["reason"]
