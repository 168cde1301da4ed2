"""streams.wall.queries without an engine: macro expansion, the city day, the terminal summary."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.times import CITY_TZ
from streams.wall import queries as wall


def test_expand_like_the_clickhouse_plugin() -> None:
    sql = ("SELECT $__interval_s, $__fromTime, $__toTime FROM t WHERE $__timeFilter(ts) AND $__dateFilter(d) "
           "AND x = '${v:percentencode}'")
    out = wall.expand(sql, 1_700_000_000, 1_700_003_600, interval_s=30, variables={"v": "abc"})
    assert out == ("SELECT 30, toDateTime(1700000000), toDateTime(1700003600) FROM t WHERE "
                   "ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600) AND "
                   "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14') AND x = 'abc'")


@pytest.mark.parametrize("sql", ["SELECT $__timeInterval(ts)", "SELECT $__fromTime_ms", "WHERE $__timeFilter()",
                                 "WHERE $__timeFilter(a, b)"])
def test_expand_refuses_macros_18_16_cannot_run(sql: str) -> None:
    with pytest.raises(ValueError):
        wall.expand(sql, 0, 1)


def test_expand_needs_every_variable_and_never_pastes_text_into_sql() -> None:
    with pytest.raises(KeyError):
        wall.expand("WHERE id = '${case_id:percentencode}'", 0, 1)
    with pytest.raises(ValueError, match="pasted into SQL as typed"):
        wall.expand("WHERE id = '${case_id}'", 0, 1, variables={"case_id": "abc"})
    with pytest.raises(ValueError, match="pasted into SQL as typed"):
        wall.expand("WHERE id = '$case_id'", 0, 1, variables={"case_id": "abc"})
    hostile = "x' OR 1=1 -- \\' ; DROP TABLE cases"
    out = wall.expand("WHERE id = '${case_id:percentencode}'", 0, 1, variables={"case_id": hostile})
    assert out == "WHERE id = 'x%27%20OR%201%3D1%20--%20%5C%27%20%3B%20DROP%20TABLE%20cases'"
    case_id = "310104013-20261102-0a1b2c3d"
    assert wall.expand("'${case_id:percentencode}'", 0, 1, variables={"case_id": case_id}) == f"'{case_id}'"


@given(st.text())
def test_percentencode_lets_nothing_but_unreserved_characters_through(value: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_.~%-]*", wall.percentencode(value))


def test_every_template_variable_in_the_wall_sql_is_percent_encoded() -> None:
    for query in wall.QUERIES.values():
        for match in re.finditer(r"\$\{?(\w+)(:\w+)?", query.sql):
            if not match.group(1).startswith("__"):
                assert match.group(2) == ":percentencode", f"{query.name}: {match.group(0)}"


def test_today_range_starts_at_city_midnight() -> None:
    now = datetime(2026, 11, 20, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
    start, end = wall.today_range(now)
    assert datetime.fromtimestamp(start, CITY_TZ) == datetime(2026, 11, 20, tzinfo=CITY_TZ)
    assert end == int(now.timestamp())


def test_format_summary_renders_every_block() -> None:
    summary = {
        "lights": [{"green": 1, "yellow": 0, "red": 2}],
        "dead_letters_by_topic": [],
        "overdue_cases": [{"case_id": f"c{i}", "overdue_hours": 1.25, "deadline": datetime(2026, 1, 1, 4, tzinfo=UTC)}
                          for i in range(12)],
    }
    text = wall.format_summary(summary)
    assert "== 红黄灯 Open cases by light\n   green=1  yellow=0  red=2" in text
    assert "== 死信 Dead letters by topic\n   (none yet)" in text
    assert "case_id=c0  overdue_hours=1.25  deadline=12:00" in text  # city time
    assert "... 2 more" in text
