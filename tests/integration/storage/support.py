"""Helpers shared by the storage integration tests."""
from __future__ import annotations

from datetime import datetime

from streams.core.times import CITY_TZ
from streams.storage.store import load_migrations

ALL_VERSIONS = [m.version for m in load_migrations()]


def month_ms(year: int, month: int, day: int = 15) -> int:
    """Noon of that day in the city, as epoch ms: a row that lands in partition YYYYMM."""
    return int(datetime(year, month, day, 12, tzinfo=CITY_TZ).timestamp() * 1000)
