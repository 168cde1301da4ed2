"""streams.storage.retention without an engine: which monthly partitions a retention keeps."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.times import CITY_TZ
from streams.storage.retention import cutoff_month


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
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
    assert cutoff_month(datetime(2026, 1, 31, 20, tzinfo=UTC), 1) == 202602
    with pytest.raises(ValueError):
        cutoff_month(datetime(2026, 1, 1, tzinfo=UTC), 0)
