"""ruff and mypy run in ``make test``: the configuration is in pyproject.toml ([tool.ruff], [tool.mypy];
mypy checks streams/core with everything --strict checks). A finding fails the test and is printed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT

# What is held to ruff: the package and its tests. mypy checks the package only: the tests are not typed to
# its settings (disallow_untyped_defs etc. would report ~500 findings there), so they stay out of MYPY_PATHS.
RUFF_PATHS = ["streams", "tests"]
MYPY_PATHS = ["streams"]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <tool> ...`` from the repository root (where pyproject.toml configures it)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def test_linted_paths_exist() -> None:
    missing = [p for p in RUFF_PATHS + MYPY_PATHS if not (REPO_ROOT / p).exists()]
    assert not missing, f"RUFF_PATHS / MYPY_PATHS name paths that do not exist: {missing}"


def test_ruff_is_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", *RUFF_PATHS)
    if "No module named ruff" in result.stderr:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"ruff findings:\n{result.stdout}{result.stderr}"


def test_mypy_is_clean() -> None:
    # Imported modules outside MYPY_PATHS are analysed (their types count) but not reported.
    result = run_tool("mypy", "--follow-imports=silent", *MYPY_PATHS)
    if "No module named mypy" in result.stderr:
        pytest.fail("mypy is not installed: pip install -e '.[test]'")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"mypy findings:\n{result.stdout}{result.stderr}"
