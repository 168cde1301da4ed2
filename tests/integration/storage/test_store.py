"""The Store on both engines: schema, migrations, inserts, idempotence, retention, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from streams.storage.store import load_migrations
from streams.storage import RowError, StoreError, drop_expired_partitions, open_store
from streams.storage.retention import CITY_TZ, partitions
from streams.storage.store import Store

ALL_VERSIONS = [m.version for m in load_migrations()]

# The columns every writer relies on (docs/CONTRACTS.md "ClickHouse tables"), name -> type.
S, I64, F64, ARR, NF = "String", "Int64", "Float64", "Array(String)", "Nullable(Float64)"
CONTRACT: dict[str, dict[str, str]] = {
    "signals": dict(signal_id=S, source=S, source_kind=S, source_id=S, ts_ms=I64, ingest_ms=I64, category_code=S,
                    category_name=S, confidence=F64, context=ARR, lat=NF, lon=NF, cell=S, community=S, street=S,
                    street_code=S, district=S, address=S, reporter_id=S, reporter_kind=S, handled_on_spot="UInt8"),
    "cases": dict(case_id=S, version=I64, updated_ms=I64, opened_ms=I64, category_code=S, category_name=S,
                  departments=ARR, level="UInt8", status=S, origin=S, street=S, street_code=S, community=S, cell=S,
                  address=S, lat=NF, lon=NF, reporters="UInt32", sources=ARR, light=S, deadline_ms=I64,
                  rework_count="UInt32", urge_count="UInt32", quick_handled="UInt8", dispatched_by=S, closed_ms=I64,
                  on_time="UInt8", handling_ms=I64, kb_version=S, stages=S),
    "case_transitions": dict(event_id=S, case_id=S, ts_ms=I64, from_stage=S, to_stage=S, action=S, actor_kind=S,
                             actor_id=S, spent_ms=I64, clock=S, light=S, category_code=S, street=S, departments=ARR,
                             detail=S),
    "dispatches": dict(dispatch_id=S, case_id=S, ts_ms=I64, departments=ARR, primary_department=S, level="UInt8",
                       category_code=S, category_name=S, street=S, deadline_ms=I64, kb_version=S),
    "sla_alerts": dict(alert_id=S, case_id=S, ts_ms=I64, stage=S, light=S, kind=S, departments=ARR, deadline_ms=I64),
    "dead_letters": dict(topic=S, partition="UInt32", offset=I64, reason=S, ts_ms=I64, original=S, key=S),
    "triage": dict(triage_id=S, topic=S, reason=S, ts_ms=I64, record=S, best_category=S, confidence=F64),
    "sensor_alarms": dict(alarm_id=S, device_id=S, building=S, ts_ms=I64, metric=S, value=F64, threshold=F64, street=S,
                          category_code=S),
    "webhook_deliveries": dict(delivery_id=S, department=S, case_id=S, kind=S, idempotency_key=S, attempt="UInt32",
                               status=S, http_status="UInt16", latency_ms=F64, ts_ms=I64, error=S),
    "zero_reports": dict(report_id=S, reporter_id=S, reporter_kind=S, ts_ms=I64, community=S, street=S),
    "inspector_tracks": dict(inspector_id=S, ts_ms=I64, lat=F64, lon=F64, cell=S, street=S),
}


def ms(year: int, month: int, day: int = 15) -> int:
    return int(datetime(year, month, day, 12, tzinfo=CITY_TZ).timestamp() * 1000)


def test_schema_has_every_contract_column(store: Store) -> None:
    assert set(CONTRACT) | {"schema_migrations"} <= set(store.tables())
    for table, columns in CONTRACT.items():
        actual = {c.name: c.type for c in store.columns(table)}
        for name, ch_type in columns.items():
            assert actual.get(name) == ch_type, f"{table}.{name}: {actual.get(name)} != {ch_type}"
        derived = [c for c in store.columns(table) if c.derived]
        assert derived and all(c.type == "DateTime('Asia/Shanghai')" for c in derived)


def test_migrate_is_idempotent_and_recorded(store: Store) -> None:
    assert store.migrate() == []  # the fixture applied them already
    assert store.applied_migrations() == ALL_VERSIONS
    assert store.query("SELECT count() AS n FROM schema_migrations FINAL") == [{"n": len(ALL_VERSIONS)}]


def test_round_trip_types_and_derived_time(store: Store) -> None:
    store.insert("signals", [{
        "signal_id": "s1", "source": "hotline", "source_kind": "12345", "source_id": "c1", "ts_ms": 1_763_000_000_123,
        "ingest_ms": 1_763_000_000_500, "category_name": "噪声扰民 'quoted' \\ back", "confidence": 0.75,
        "context": ["compound", "decibel"], "lat": 31.2, "lon": None, "street": None, "handled_on_spot": True,
    }])
    rows = store.query("SELECT * FROM signals FINAL")
    assert len(rows) == 1
    row = rows[0]
    assert row["ts"] == datetime.fromtimestamp(1_763_000_000, timezone.utc)
    assert row["ts"].utcoffset().total_seconds() == 8 * 3600
    assert row["category_name"] == "噪声扰民 'quoted' \\ back"
    assert row["context"] == ["compound", "decibel"] and row["lat"] == 31.2 and row["lon"] is None
    assert row["street"] == "" and row["handled_on_spot"] == 1 and row["category_code"] == ""
    assert store.query("SELECT signal_id FROM signals WHERE category_name = %(n)s", {"n": row["category_name"]}) == [
        {"signal_id": "s1"}]


@pytest.mark.parametrize("row, message", [
    ({"signal_id": "x", "no_such_column": 1}, "unknown column"),
    ({"signal_id": 5}, "expected str"),
    ({"signal_id": "x", "ts_ms": "soon"}, "expected int"),
    ({"signal_id": "x", "ts": 5}, "derived"),
    ({"signal_id": "x", "context": "a"}, "expected a list"),
    ({"signal_id": "x", "confidence": float("nan")}, "non-finite"),
    ({"signal_id": "x", "handled_on_spot": -1}, "negative"),
])
def test_bad_rows_raise_a_clear_error(store: Store, row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError, match=message):
        store.insert("signals", [row])
    assert store.query("SELECT count() AS n FROM signals") == [{"n": 0}]


def test_unknown_table_is_a_clear_error(store: Store) -> None:
    with pytest.raises(RowError, match="unknown table"):
        store.insert("no_such_table", [{"a": 1}])


def test_engine_errors_carry_the_statement(store: Store) -> None:
    with pytest.raises(StoreError, match="SELEC nonsense"):
        store.query("SELEC nonsense")


def test_a_retried_batch_leaves_no_duplicate(store: Store) -> None:
    rows = [{"event_id": f"e{i}", "case_id": "c", "ts_ms": 1_763_000_000_000 + i} for i in range(100)]
    store.insert("case_transitions", rows)
    store.insert("case_transitions", rows[:60])
    assert store.query("SELECT count() AS n FROM case_transitions FINAL") == [{"n": 100}]


def test_final_sees_only_the_latest_case_version_even_when_filtering(store: Store) -> None:
    base = {"case_id": "hn-1", "opened_ms": ms(2026, 11), "departments": ["城管"]}
    store.insert("cases", [{**base, "version": 1, "status": "dispatch", "light": "green"}])
    store.insert("cases", [{**base, "version": 3, "status": "closed", "light": "green"}])
    store.insert("cases", [{**base, "version": 2, "status": "handle", "light": "red"}])  # late, older version
    assert store.query("SELECT count() AS n FROM cases FINAL WHERE status != 'closed'") == [{"n": 0}]
    assert store.query("SELECT status, version FROM cases FINAL") == [{"status": "closed", "version": 3}]
    assert store.query("SELECT argMax(status, version) AS s FROM cases GROUP BY case_id") == [{"s": "closed"}]


def test_retention_drops_only_old_month_partitions(store: Store) -> None:
    months = [(2026, 8), (2026, 9), (2026, 10), (2026, 11)]
    store.insert("signals", [{"signal_id": f"s{m}", "ts_ms": ms(y, m)} for y, m in months])
    store.insert("dead_letters", [{"topic": "t", "offset": m, "ts_ms": ms(y, m)} for y, m in months])
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    dropped = drop_expired_partitions(store, {"signals": 2}, now)
    assert dropped == {"signals": ["202608", "202609"]}
    assert partitions(store, "signals") == ["202610", "202611"]
    assert partitions(store, "dead_letters") == ["202608", "202609", "202610", "202611"]  # not configured: kept
    assert drop_expired_partitions(store, {"signals": 2}, now) == {"signals": []}
    with pytest.raises(ValueError, match="unknown table"):
        drop_expired_partitions(store, {"nope": 1}, now)


def test_open_store_rejects_bad_urls() -> None:
    for url in ("sqlite://x", "chdb://", "clickhouse://hostonly/db"):
        with pytest.raises(ValueError):
            open_store(url)


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


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
def test_streams_migrate_command(engine_name: str, store_url_factory: Callable[[str], str]) -> None:
    url = store_url_factory(engine_name)
    streams = [sys.executable, "-m", "streams.cli", "migrate", "--store-url", url]
    first = subprocess.run(streams, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"applied {', '.join(ALL_VERSIONS)}" in first.stdout or all(v in first.stdout for v in ALL_VERSIONS)
    second = subprocess.run(streams, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and f"up to date ({ALL_VERSIONS[-1]})" in second.stdout
    if engine_name == "server":
        with open_store(url) as opened:
            assert opened.applied_migrations() == ALL_VERSIONS


@pytest.mark.parametrize("engine_name", ["chdb", "server"])
def test_streams_retention_command(engine_name: str, store_url_factory: Callable[[str], str]) -> None:
    url = store_url_factory(engine_name)
    with open_store(url) as opened:
        opened.migrate()
        opened.insert("signals", [{"signal_id": "old", "ts_ms": ms(2020, 1)}, {"signal_id": "new", "ts_ms": ms(2099, 1)}])
    env = {**os.environ, "CITYGRID_RETENTION_MONTHS": '{"signals": 12}'}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "retention", "--store-url", url],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "signals: dropped 202001" in result.stdout
    with open_store(url) as opened:
        assert opened.query("SELECT signal_id FROM signals FINAL") == [{"signal_id": "new"}]


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

