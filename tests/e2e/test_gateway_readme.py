"""The README's curl examples work as written: they run, unchanged but for the port, against `make demo`'s
arrangement (the worker with the gateway inside it on an embedded chdb store, the demo keys file)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from streams.cli.demo import DEMO_KEYS
from streams.local.kafka import LocalKafka, free_port
from tests.e2e.helpers import wait_until
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]
DEMO_URL = "http://127.0.0.1:8080"


def readme_curl_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The front door") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_curl_examples_run_as_written(
    kafka: LocalKafka, worker_factory, store_url_factory, tmp_path: Path
) -> None:
    script = readme_curl_block()
    assert script.count("curl ") >= 7 and DEMO_URL in script
    port = free_port()
    worker = worker_factory(
        store_url_factory("chdb"), gateway_in_worker="true", gateway_port=str(port), gateway_keys_file=str(DEMO_KEYS)
    )
    worker.wait_healthy()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _up(url), 60, "the gateway inside the worker", worker.tail)

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(DEMO_URL, url)],
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}\n{worker.tail()}"
    assert '"accepted":1' in out and '"rejected":0' in out  # the feed
    assert "<services>" in out and "<service_code>E0103</service_code>" in out  # Open311 XML
    filed = re.search(r'\[\{"service_request_id":"([^"]+)"', out)
    assert filed, out
    assert f'"service_request_id":"{filed.group(1)}","status":"open"' in out  # listed with its status
    assert '"status":"queued"' in out and '"actor":{"kind":"department","id":"城管执法中队"}' in out
    # and the progress page the README points to
    page = requests.get(f"{url}/progress/{filed.group(1)}", timeout=30)
    assert page.status_code == 200 and "事项进度查询" in page.text
    assert worker.stop() == 0, worker.tail()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).json()["kafka"] is True
    except (requests.RequestException, json.JSONDecodeError, KeyError):
        return False
