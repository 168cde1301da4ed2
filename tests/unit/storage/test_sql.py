"""Pure parts of the storage layer: literals, migration files, macro expansion, retention months, metrics."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from streams.wall import queries as wall
from streams.metrics import PipelineMetrics
from streams.storage.retention import CITY_TZ, cutoff_month
from streams.storage.store import load_migrations, split_statements, sql_literal, substitute


def test_sql_literal_escapes_quotes_and_backslashes() -> None:
    assert sql_literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert sql_literal(None) == "NULL" and sql_literal(True) == "1" and sql_literal(3) == "3"
    assert sql_literal(["a", 1]) == "['a', 1]"
    assert sql_literal(datetime(2026, 1, 1, tzinfo=timezone.utc)) == "toDateTime(1767225600)"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), datetime(2026, 1, 1), object()])
def test_sql_literal_rejects_what_it_cannot_quote(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        sql_literal(bad)


def test_substitute_only_with_params() -> None:
    assert substitute("SELECT '%'", None) == "SELECT '%'"
    assert substitute("SELECT %(x)s", {"x": "a'b"}) == "SELECT 'a\\'b'"


def test_split_statements_drops_comments() -> None:
    script = "-- header; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- c\nCREATE TABLE b (y UInt8) ENGINE = Memory;\n"
    assert split_statements(script) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "CREATE TABLE b (y UInt8) ENGINE = Memory"]


def test_migrations_are_ordered_and_define_every_contract_table() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    text = "\n".join(s for m in migrations for s in m.statements)
    for table in ("signals", "cases", "case_transitions", "dispatches", "sla_alerts", "dead_letters", "triage",
                  "sensor_alarms", "webhook_deliveries", "zero_reports", "inspector_tracks"):
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in text
    for forbidden in ("DateTime64", "LowCardinality", " TTL ", "OVER ("):
        assert forbidden not in text


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
       st.integers(min_value=1, max_value=240))
def test_cutoff_month_keeps_exactly_n_months(now: datetime, months: int) -> None:
    cutoff = cutoff_month(now, months)
    local = now.astimezone(CITY_TZ)
    year, month = divmod(cutoff, 100)
    assert 1 <= month <= 12
    kept = (local.year * 12 + local.month) - (year * 12 + month) + 1
    assert kept == months


def test_cutoff_month_uses_the_city_timezone() -> None:
    # 2026-01-31 20:00 UTC is already February in Shanghai.
    assert cutoff_month(datetime(2026, 1, 31, 20, tzinfo=timezone.utc), 1) == 202602
    with pytest.raises(ValueError):
        cutoff_month(datetime(2026, 1, 1, tzinfo=timezone.utc), 0)


def test_expand_like_the_clickhouse_plugin() -> None:
    sql = "SELECT $__interval_s, $__fromTime, $__toTime FROM t WHERE $__timeFilter(ts) AND $__dateFilter(d) AND x = '${v}'"
    out = wall.expand(sql, 1_700_000_000, 1_700_003_600, interval_s=30, variables={"v": "abc"})
    assert out == ("SELECT 30, toDateTime(1700000000), toDateTime(1700003600) FROM t WHERE "
                   "ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600) AND "
                   "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14') AND x = 'abc'")


@pytest.mark.parametrize("sql", ["SELECT $__timeInterval(ts)", "SELECT $__fromTime_ms", "WHERE $__timeFilter()",
                                 "WHERE $__timeFilter(a, b)"])
def test_expand_refuses_macros_18_16_cannot_run(sql: str) -> None:
    with pytest.raises(ValueError):
        wall.expand(sql, 0, 1)


def test_expand_needs_every_variable_and_refuses_quotes() -> None:
    with pytest.raises(KeyError):
        wall.expand("WHERE id = '${case_id}'", 0, 1)
    with pytest.raises(ValueError):
        wall.expand("WHERE id = '${case_id}'", 0, 1, variables={"case_id": "x' OR 1=1 --"})


def test_today_range_starts_at_city_midnight() -> None:
    now = datetime(2026, 11, 20, 1, 30, tzinfo=timezone.utc)  # 09:30 in Shanghai
    start, end = wall.today_range(now)
    assert datetime.fromtimestamp(start, CITY_TZ) == datetime(2026, 11, 20, tzinfo=CITY_TZ)
    assert end == int(now.timestamp())


def test_metrics_are_prefixed_and_isolated_per_instance() -> None:
    first, second = PipelineMetrics(), PipelineMetrics(CollectorRegistry())
    first.event_in("hotline", "hotline.calls", 1_700_000_000.0)
    first.set_open_cases({("dispatch", "red"): 3})
    first.set_open_cases({("handle", "green"): 1})
    text = generate_latest(first.registry).decode()
    assert 'citygrid_events_in_total{source="hotline",topic="hotline.calls"} 1.0' in text
    assert 'citygrid_open_cases{light="green",stage="handle"} 1.0' in text
    assert 'stage="dispatch"' not in text  # replaced, not accumulated
    assert "citygrid_events_in_total{" not in generate_latest(second.registry).decode()
    names = {m.name for m in first.registry.collect()}
    assert names and all(n.startswith("citygrid_") for n in names)
    for required in ("citygrid_events_in", "citygrid_dead_letters", "citygrid_classification_confidence",
                     "citygrid_dedup_merges", "citygrid_open_cases", "citygrid_sla_transitions",
                     "citygrid_ingest_to_dispatch_seconds", "citygrid_clickhouse_batch_rows",
                     "citygrid_clickhouse_write_seconds", "citygrid_clickhouse_write_failures",
                     "citygrid_webhook_deliveries", "citygrid_webhook_latency_seconds", "citygrid_consumer_lag"):
        assert required in names


def test_format_summary_renders_every_block() -> None:
    summary = {
        "lights": [{"green": 1, "yellow": 0, "red": 2}],
        "dead_letters_by_topic": [],
        "overdue_cases": [{"case_id": f"c{i}", "overdue_hours": 1.25, "deadline": datetime(2026, 1, 1, 4, tzinfo=timezone.utc)}
                          for i in range(12)],
    }
    text = wall.format_summary(summary)
    assert "== 红黄灯 Open cases by light\n   green=1  yellow=0  red=2" in text
    assert "== 死信 Dead letters by topic\n   (none yet)" in text
    assert "case_id=c0  overdue_hours=1.25  deadline=12:00" in text  # city time
    assert "... 2 more" in text
