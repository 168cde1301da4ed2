"""Terminal live view: polls the worker's /wall/ (the wall's queries) and redraws."""
from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from subprocess import Popen


def fetch(url: str, timeout: float = 5.0, token: str | None = None) -> dict[str, object]:
    """The worker's /wall/ JSON: query name -> rows (see streams.wall.queries.wall_summary); ``token``:
    CITYGRID_WALL_TOKEN when the worker asks for one."""
    request = urllib.request.Request(f"{url.rstrip('/')}/wall/",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        summary: dict[str, object] = json.loads(resp.read().decode("utf-8"))
        return summary


def _width(text: str) -> int:
    """Display width: CJK characters take two cells."""
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def render(summary: dict[str, object], columns: int = 100) -> str:
    from streams.wall.queries import QUERIES

    lines: list[str] = []
    for section, value in summary.items():
        title = QUERIES[section].title if section in QUERIES else section
        lines.append(f"\033[1m{title}\033[0m")
        if isinstance(value, dict):
            items = [f"{k}: {v}" for k, v in value.items()]
            row = ""
            for item in items:
                if _width(row) + _width(item) + 3 > columns:
                    lines.append("  " + row)
                    row = ""
                row += _pad(item, 22) + " "
            if row:
                lines.append("  " + row)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            keys = list(value[0])
            widths = {k: max(_width(str(k)), *(_width(str(r.get(k, ""))) for r in value[:10])) for k in keys}
            lines.append("  " + "  ".join(_pad(str(k), widths[k]) for k in keys))
            for r in value[:10]:
                lines.append("  " + "  ".join(_pad(str(r.get(k, "")), widths[k]) for k in keys))
        elif isinstance(value, list):
            lines.append("  (none)")
        else:
            lines.append(f"  {value}")
    return "\n".join(lines)


def run_live(url: str, seconds: float | None = None, children: list[Popen[bytes]] | None = None,
             interval: float = 2.0, token: str | None = None) -> None:
    started = time.monotonic()
    while seconds is None or time.monotonic() - started < seconds:
        for child in children or []:
            if child.poll() is not None:
                raise SystemExit(f"live: a pipeline process exited with {child.returncode}; see its log")
        try:
            body = render(fetch(url, token=token), shutil.get_terminal_size((100, 40)).columns)
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
            body = f"waiting for the worker at {url} ... ({exc.__class__.__name__})"
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"\033[2J\033[H citygrid-streams live view  {stamp}  (Ctrl-C to stop)\n\n{body}\n")
        sys.stdout.flush()
        time.sleep(interval)
