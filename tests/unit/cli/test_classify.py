"""`streams classify` as a user runs it: the installed console script in a subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

REPO = REPO_ROOT
STREAMS = [sys.executable, "-m", "streams.cli"]  # the command as installed in the running environment


def classify(lines: list[str], env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    proc = subprocess.run([*STREAMS, "classify"], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**os.environ, **(env or {})})
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, out, proc.stderr


@pytest.fixture(scope="module")
def good() -> tuple[int, list[dict], str]:
    lines = [
        {"text": "楼上邻居天天半夜跺脚，噪音太大", "address": "钦江路15号"},
        {"text": "楼下酒吧音乐太响，希望测一下分贝", "address": "宜山路455号"},
        {"text": "樓上鄰居裝修砸承重牆", "address": "斜土路1175弄"},
        {"text": "井盖没了", "lat": 31.1725, "lon": 121.4062},
        {"text": "你好请问今天天气怎么样"},
    ]
    return classify([json.dumps(x, ensure_ascii=False) for x in lines])


def test_one_line_out_per_line_in(good) -> None:
    code, out, stderr = good
    assert code == 0, stderr
    assert len(out) == 5
    for row in out:
        assert {"category_code", "category_name", "departments", "level", "confidence", "kb_version",
                "context", "location"} <= set(row)
        assert isinstance(row["departments"], list) and row["departments"]


def test_routes(good) -> None:
    _, out, _ = good
    noise, bar, wall, manhole, chat = out
    assert (noise["category_name"], noise["departments"], noise["level"]) == ("噪声扰民", ["物业公司"], 4)
    assert noise["location"]["community"] == "怡桂苑" and noise["location"]["street"] == "虹梅街道"
    assert bar["departments"] == ["市场监管所", "生态环境局"] and "decibel" in bar["context"]
    assert wall["category_name"] == "损坏房屋承重结构" and wall["departments"] == ["物业公司", "房管办"]
    assert wall["immediate"]
    assert manhole["category_name"] == "井盖缺失" and manhole["departments"][0] == "物业公司"
    assert chat["triage"] is True and chat["location"] is None and chat["location_reason"]
    assert chat["out_of_scope"] and "out of scope" in chat["triage_reason"]
    assert "unknown location" in chat["triage_reason"]
    assert noise["triage"] is False and noise["triage_reason"] == ""
    assert len({row["kb_version"] for row in out}) == 1


def test_bad_lines_get_error_lines_and_a_failing_exit_code() -> None:
    code, out, _ = classify(['{"text": "路灯坏了", "address": "钦江路101号"}', "not json", '{"address": "x"}',
                             '{"text": "路灯坏了", "lat": "north", "lon": 1}', '[1, 2]',
                             '{"text": "路灯坏了", "extra": 1}',
                             '{"text": "路灯坏了", "lat": 31.2}', '{"text": "路灯不亮"}'])
    assert code == 1
    assert len(out) == 8
    assert out[0]["category_name"] == "路灯损坏" and out[0]["departments"] == ["路灯管理所"]
    assert out[1]["line"] == 2 and "not JSON" in out[1]["error"]
    assert "'text'" in out[2]["error"]
    assert "'lat' must be a number" in out[3]["error"]
    assert "JSON object" in out[4]["error"]
    assert "unknown field" in out[5]["error"]
    assert "both 'lat' and 'lon'" in out[6]["error"]
    assert out[7]["category_name"] == "路灯损坏"  # processing went on after the bad lines


def test_broken_knowledge_base_is_reported(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text("version: x\nrules: []\n", encoding="utf-8")
    code, out, stderr = classify(['{"text": "路灯坏了"}'], env={"CITYGRID_KB_PATH": str(kb)})
    assert code == 2 and not out
    assert str(kb) in stderr and "knowledge base not usable" in stderr


def test_fake_certificates_go_to_triage_as_out_of_scope() -> None:
    code, [row], _ = classify(['{"text": "小区门口有人卖假证", "address": "钦江路15号"}'])
    assert code == 0
    assert row["out_of_scope"] and row["triage"]
    assert row["triage_reason"] == "out of scope: the text fits no category of the taxonomy"


def test_evaluate_prints_per_category_scores_and_confusions() -> None:
    proc = subprocess.run([*STREAMS, "classify", "--evaluate", "--confusions", "5"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    accuracy = float(re.search(r"accuracy (\d\.\d+)", proc.stdout).group(1))
    assert accuracy >= 0.90
    assert "near-copies between training and held-out texts (ratio >= 80): 0" in proc.stdout
    rows = [line.split() for line in lines if re.match(r"^[BE]\d{4} ", line)]
    assert len(rows) >= 100
    code, name, precision, recall, f1, n = rows[0]
    assert code == "B0101" and name == "井盖缺失" and 0 <= float(precision) <= 1 and int(n) > 0
    assert any(line.startswith("-      范围外") for line in lines)
    confusions = [line for line in lines if re.match(r"^\s+\d+ x \S+ -> \S+$", line)]
    assert 1 <= len(confusions) <= 5
