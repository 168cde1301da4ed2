"""Fixtures live in tests/fixtures/, one module per real service."""
pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.clickhouse",
    "tests.fixtures.worker",
]
