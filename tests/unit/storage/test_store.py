"""streams.storage.store without an engine: the migration files shipped with the package."""
from __future__ import annotations

from streams.storage.store import load_migrations


def test_migrations_are_ordered_and_define_every_contract_table() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    text = "\n".join(s for m in migrations for s in m.statements)
    for table in ("signals", "cases", "case_transitions", "dispatches", "sla_alerts", "dead_letters", "triage",
                  "sensor_alarms", "webhook_deliveries", "zero_reports", "inspector_tracks", "input_ledger",
                  "sink_dead_letters"):
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in text
    for forbidden in ("DateTime64", "LowCardinality", " TTL ", "OVER ("):
        assert forbidden not in text
