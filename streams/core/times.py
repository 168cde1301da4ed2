"""Event time: ISO-8601 parsing and the city's time zone — one definition for the whole pipeline."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

CITY_TZ = ZoneInfo("Asia/Shanghai")


class BadTimestamp(ValueError):
    """A timestamp the pipeline cannot use; the message names the value."""


def parse_iso(value: str) -> datetime:
    """ISO-8601 with an offset (a trailing Z is accepted). Naive times are refused: event time must be exact."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError as exc:
        raise BadTimestamp(f"not an ISO-8601 timestamp: {value!r}") from exc
    if dt.tzinfo is None:
        raise BadTimestamp(f"timestamp without UTC offset: {value!r}")
    return dt


def iso_to_ms(value: str) -> int:
    return int(parse_iso(value).timestamp() * 1000)
