"""What every bench result carries: the commit, the date, the machine's CPU count and its load."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The checkout's commit (with ``+dirty`` when the work tree has changes), or ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on a shared machine disturb every figure)."""
    return [round(x, 2) for x in os.getloadavg()]


def run_metadata() -> dict[str, Any]:
    return {"commit": commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(), "load_at_start": load()}
