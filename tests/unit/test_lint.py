"""ruff and mypy run in ``make test``: the configuration is in pyproject.toml ([tool.ruff], [tool.mypy];
mypy checks streams/core with everything --strict checks). A finding fails the test and is printed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT

# What is held to ruff and mypy: the whole package. The goal adds the tests: ["streams", "tests"].
LINTED_PATHS = ["streams"]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <tool> ...`` from the repository root (where pyproject.toml configures it)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def test_linted_paths_exist() -> None:
    missing = [p for p in LINTED_PATHS if not (REPO_ROOT / p).exists()]
    assert not missing, f"LINTED_PATHS names paths that do not exist: {missing}"


def test_ruff_is_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", *LINTED_PATHS)
    if "No module named ruff" in result.stderr:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"ruff findings:\n{result.stdout}{result.stderr}"


def test_mypy_is_clean() -> None:
    # Imported modules outside LINTED_PATHS are analysed (their types count) but not reported.
    result = run_tool("mypy", "--follow-imports=silent", *LINTED_PATHS)
    if "No module named mypy" in result.stderr:
        pytest.fail("mypy is not installed: pip install -e '.[test]'")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"mypy findings:\n{result.stdout}{result.stderr}"
