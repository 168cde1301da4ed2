"""The Store interface on both engines: schema, migrations, inserts, errors, idempotence, open_store."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.storage import RowError, StoreError, open_store
from streams.storage.store import Store
from tests.integration.storage.support import ALL_VERSIONS, month_ms

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
    assert row["ts"] == datetime.fromtimestamp(1_763_000_000, UTC)
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
    base = {"case_id": "hn-1", "opened_ms": month_ms(2026, 11), "departments": ["城管"]}
    store.insert("cases", [{**base, "version": 1, "status": "dispatch", "light": "green"}])
    store.insert("cases", [{**base, "version": 3, "status": "closed", "light": "green"}])
    store.insert("cases", [{**base, "version": 2, "status": "handle", "light": "red"}])  # late, older version
    assert store.query("SELECT count() AS n FROM cases FINAL WHERE status != 'closed'") == [{"n": 0}]
    assert store.query("SELECT status, version FROM cases FINAL") == [{"status": "closed", "version": 3}]
    assert store.query("SELECT argMax(status, version) AS s FROM cases GROUP BY case_id") == [{"s": "closed"}]


def test_open_store_rejects_bad_urls() -> None:
    for url in ("sqlite://x", "chdb://", "clickhouse://hostonly/db"):
        with pytest.raises(ValueError):
            open_store(url)
