"""Property tests on both engines: any text and number a writer sends comes back unchanged."""
from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.storage.store import Store

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_ids = itertools.count()


@SETTINGS
@given(text=TEXT, context=st.lists(TEXT, max_size=4),
       lat=st.none() | st.floats(-90, 90, allow_nan=False), confidence=st.floats(0, 1),
       ts_ms=st.integers(0, 4_000_000_000_000))
def test_rows_round_trip(store: Store, text: str, context: list[str], lat: float | None, confidence: float,
                         ts_ms: int) -> None:
    signal_id = f"p{next(_ids)}"
    store.insert("signals", [{"signal_id": signal_id, "address": text, "context": context, "lat": lat,
                              "confidence": confidence, "ts_ms": ts_ms}])
    rows = store.query("SELECT address, context, lat, confidence, ts_ms FROM signals WHERE signal_id = %(id)s",
                       {"id": signal_id})
    assert rows == [{"address": text, "context": context, "lat": lat, "confidence": confidence, "ts_ms": ts_ms}]


@SETTINGS
@given(text=TEXT)
def test_query_parameters_round_trip(store: Store, text: str) -> None:
    assert store.query("SELECT %(t)s AS t", {"t": text}) == [{"t": text}]
