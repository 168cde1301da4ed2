"""The citizen's progress page in a real browser (Debian's headless chromium): the rendered text shows the six
stages with their times, the responsible department, the deadline and its light, and no personal data;
a screenshot is kept for a person to look at."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from streams.bus.codec import registry
from streams.storage import Store
from tests.fixtures.gateway import GatewayThread, key_of
from tests.integration.gateway.seed import City

pytestmark = [pytest.mark.kafka, pytest.mark.chromium]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed (deploy/local/install-system-deps.sh installs it)"
    assert url.startswith("http://127.0.0.1:")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True, timeout=120
    )


def visible_text(dom: str) -> str:
    body = re.sub(r"<style.*?</style>|<head.*?</head>", "", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()


def file_request(gateway: GatewayThread) -> tuple[str, dict]:
    form = {
        "api_key": key_of("civic-app"),
        "service_code": "E0601",
        "address_string": "钦江路15号",
        "description": "钦江路15号有6户居室群租，我是楼下住户，电话13912345678",
        "email": "li.ming@example.org",
        "first_name": "明",
        "last_name": "李",
    }
    answer = requests.post(f"{gateway.url}/open311/v2/requests.json", data=form, timeout=30)
    assert answer.status_code == 200, answer.text
    request_id = answer.json()[0]["service_request_id"]
    return request_id, registry().from_json("open311_request", _record_of(gateway, request_id))


def _record_of(gateway: GatewayThread, request_id: str) -> dict:
    """The open311.requests record as produced (the gateway remembers it until the pipeline's rows exist)."""
    item = gateway.gateway.pending.get(request_id)
    return {k: v for k, v in item.items() if k not in ("requested_ms", "service_name")}


def test_progress_page_in_headless_chromium(
    gateway: GatewayThread, chdb_store: Store, knowledge, tmp_path: Path
) -> None:
    request_id, record = file_request(gateway)
    url = f"{gateway.url}/progress/{request_id}"

    # right after filing: received, discovered now, the rest to come
    early = visible_text(chromium(tmp_path, url, "--dump-dom").stdout.decode())
    assert "事项进度查询" in early and request_id in early and "已收到" in early and "待派遣后确定" in early

    # the pipeline's work: 立案 and 派遣 to 房管办, then the department reports it handled
    city = City(knowledge, chdb_store)
    [case_id] = city.raw("open311_request", record)
    assert not city.act(
        {
            "action_id": "fg-1",
            "ts": "2026-12-01T13:49:00+08:00",
            "case_id": case_id,
            "actor_kind": "department",
            "actor_id": "房管办",
            "action": "handled",
        }
    )["rejections"]

    result = chromium(tmp_path, url, "--dump-dom")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    text = visible_text(result.stdout.decode())
    for stage in ("发现", "立案", "派遣", "处置", "核查", "结案"):
        assert stage in text
    assert re.search(r"处置 \d{4}-12-01 13:49", text), text  # the stage done, with its time
    assert "核查 进行中" in text and "结案 —" in text
    assert "责任部门 房管办" in text and "群租" in text and "核查中" in text
    assert re.search(r"预计办结 \d{4}-\d{2}-\d{2} \d{2}:\d{2}", text), text  # the handling deadline (SLA)
    assert re.search(r"本环节时限 \d{4}-\d{2}-\d{2} \d{2}:\d{2}", text), text  # 核查's own limit
    assert re.search(r"时限状态 (绿灯|黄灯|红灯)", text), text
    assert "虹梅街道" in text
    # no personal data: not the description (with a phone number), nobody's name or email, not the door number
    for private in ("13912345678", "li.ming", "李", "楼下住户", "钦江路15号"):
        assert private not in text, private

    shot = tmp_path / "progress.png"
    result = chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=390,844")
    assert result.returncode == 0 and shot.stat().st_size > 10_000, result.stderr.decode()[-2000:]
    keep = Path(__file__).resolve().parents[3] / "var" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "progress-page.png")

    missing = requests.get(f"{gateway.url}/progress/20260101-0000000000", timeout=10)
    assert missing.status_code == 404 and "未找到" in missing.text
