"""The layout's import rules (docs/ARCHITECTURE.md): the domain core is sealed, development code stays
out of the production path. Read from the source text with ``ast``, so a violation fails before anything runs."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "streams"

# What streams/core may import besides the standard library and itself: pure-computation libraries only.
CORE_ALLOWED_THIRD_PARTY = {
    "yaml", "pydantic", "sklearn", "numpy", "scipy", "h3", "rapidfuzz", "opencc", "chinese_calendar", "orjson",
    "pyarrow",  # reads a city's device table from Parquet (a data file, like yaml)
}
# No client, codec, settings or service library: the same code runs live and in `streams replay`.
CORE_FORBIDDEN = {"faust", "mode", "aiokafka", "kafka", "fastavro", "clickhouse_driver", "chdb", "aiohttp",
                  "prometheus_client", "pydantic_settings"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            if node.module == "streams":
                found += [(node.lineno, f"streams.{alias.name}") for alias in node.names]
    return found


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", modules(PACKAGE / "core"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_imports_nothing_but_core_and_pure_libraries(path: Path) -> None:
    bad = []
    for line, name in imports_of(path):
        top = name.split(".")[0]
        if top == "streams" and not (name == "streams.core" or name.startswith("streams.core.")):
            bad.append(f"{path.name}:{line}: {name} (the core imports only streams.core)")
        elif top in CORE_FORBIDDEN:
            bad.append(f"{path.name}:{line}: {name} (a client, codec or settings library)")
    assert not bad, "\n".join(bad)


def test_core_third_party_imports_are_known() -> None:
    """A new dependency of the core is a design decision: add it to CORE_ALLOWED_THIRD_PARTY on purpose."""
    import sys

    stdlib = set(sys.stdlib_module_names)
    unknown = sorted({f"{p.relative_to(PACKAGE)}: {name}" for p in modules(PACKAGE / "core")
                      for _, name in imports_of(p)
                      if name.split(".")[0] not in stdlib | CORE_ALLOWED_THIRD_PARTY | {"streams", "__future__"}})
    assert not unknown, unknown


@pytest.mark.parametrize("path", [p for p in modules(PACKAGE) if "local" not in p.relative_to(PACKAGE).parts
                                  and p.relative_to(PACKAGE).parts[0] != "cli"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_production_code_does_not_import_development_services(path: Path) -> None:
    """streams/local/ (the dev broker, a private clickhouse-server) is for tests, `make demo` and the bench."""
    bad = [f"{line}: {name}" for line, name in imports_of(path) if name.startswith("streams.local")]
    assert not bad, bad


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself: a core module importing the codec is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from streams.bus.codec import DecodeError\nimport faust\n", encoding="utf-8")
    assert [name for _, name in imports_of(bad)] == ["streams.bus.codec", "faust"]
