"""The webhooks YAML: typed endpoints per department, clear errors for bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from streams.sinks.webhooks.config import KINDS, WebhookConfigError, load_config

GOOD = """
links_base_url: https://grid.example.gov.cn
max_attempts: 6
ttl_seconds: 3600
pii_hash_key: a-key-for-callers
endpoints:
  房管办:
    url: https://fgb.example.gov.cn/hooks/citygrid
    secret: 0123456789abcdef0123
    timeout_seconds: 3
    max_in_flight: 2
    rate_per_second: 5
    burst: 10
    kinds: [dispatch, urge, escalate]
  消防救援站:
    url: https://10.0.0.9:8443/alarm
    secret_env: FIRE_WEBHOOK_SECRET
    kinds: [alarm]
  物业公司:
    url: https://pm.example.com/hook
    secret: another-secret-16ch
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "webhooks.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRE_WEBHOOK_SECRET", "from-the-environment-1")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.max_attempts == 6 and cfg.ttl_seconds == 3600
    fgb = cfg.endpoints["房管办"]
    assert (fgb.timeout_seconds, fgb.max_in_flight, fgb.rate_per_second, fgb.burst) == (3, 2, 5, 10)
    assert cfg.endpoints["消防救援站"].secret == "from-the-environment-1"
    assert cfg.endpoints["物业公司"].kinds == list(KINDS)  # default: every kind
    assert cfg.endpoint_for("房管办", "urge") is fgb
    assert cfg.endpoint_for("房管办", "alarm") is None
    assert cfg.endpoint_for("街道管理办", "dispatch") is None  # no endpoint: no delivery


def test_no_file_means_no_endpoints() -> None:
    assert load_config(None).endpoints == {}


@pytest.mark.parametrize("text,message", [
    ("endpoints:\n  不存在的部门:\n    url: https://x/\n    secret: 0123456789abcdef\n", "unknown department"),
    ("endpoints:\n  房管办:\n    url: ftp://x/\n    secret: 0123456789abcdef\n", "url"),
    ("endpoints:\n  房管办:\n    url: https://x/\n    secret: short\n", "at least 16"),
    ("endpoints:\n  房管办:\n    url: https://x/\n    secret: 0123456789abcdef\n    kinds: [party]\n", "kinds"),
    ("endpoints:\n  房管办:\n    url: https://x/\n    secret: 0123456789abcdef\n    timeout_seconds: 0\n", "timeout"),
    ("endpoints:\n  房管办:\n    url: https://x/\n    secret_env: NOT_SET_ANYWHERE_XYZ\n", "NOT_SET_ANYWHERE_XYZ"),
    ("endpoints:\n  房管办:\n    url: https://x/\n    secret: 0123456789abcdef\n    colour: red\n", "colour"),
    ("max_attempts: 0\n", "max_attempts"),
    ("- just\n- a list\n", "mapping"),
    ("endpoints: [unclosed\n", "not YAML"),
])
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(WebhookConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_cli_run_refuses_a_missing_or_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli.main import main

    monkeypatch.delenv("CITYGRID_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("CITYGRID_WEBHOOKS_FILE", raising=False)
    assert main(["webhooks", "run", "--no-store"]) == 2
    assert "CITYGRID_WEBHOOKS_FILE" in capsys.readouterr().err
    unknown = write(tmp_path, "endpoints:\n  火星部:\n    url: https://x/\n    secret: 0123456789abcdef\n")
    monkeypatch.setenv("CITYGRID_WEBHOOKS_FILE", str(unknown))
    assert main(["webhooks", "run", "--no-store"]) == 2
    assert "unknown department" in capsys.readouterr().err


@pytest.mark.parametrize("url, ok", [
    ("https://fgb.example.gov.cn/hooks", True), ("http://127.0.0.1:8080/hook", True), ("http://[::1]:8080/h", True),
    ("http://localhost:9/h", True), ("http://fgb.example.gov.cn/hooks", False), ("http://10.0.0.9:8080/alarm", False),
    ("https:///nohost", False),
])
def test_endpoints_must_be_https_except_loopback(tmp_path: Path, url: str, ok: bool) -> None:
    text = f"endpoints:\n  房管办:\n    url: {url}\n    secret: 0123456789abcdef\n"
    if ok:
        assert load_config(write(tmp_path, text)).endpoints["房管办"].url == url
    else:
        with pytest.raises(WebhookConfigError, match="must be https"):
            load_config(write(tmp_path, text))
    with pytest.raises(WebhookConfigError, match="must be https"):
        load_config(write(tmp_path, "links_base_url: http://grid.example.gov.cn\n"))


def test_two_active_secrets_while_rotating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FGB_NEW", "the-new-secret-0123456")
    monkeypatch.setenv("FGB_OLD", "the-old-secret-0123456")
    text = ("endpoints:\n  房管办:\n    url: https://fgb.example.gov.cn/h\n    secret_env: FGB_NEW\n"
            "    previous_secret_env: FGB_OLD\n")
    endpoint = load_config(write(tmp_path, text)).endpoints["房管办"]
    assert endpoint.signing_secrets == ["the-new-secret-0123456", "the-old-secret-0123456"]
    single = load_config(write(tmp_path, "endpoints:\n  房管办:\n    url: https://x/\n    secret: 0123456789abcdef\n"))
    assert single.endpoints["房管办"].signing_secrets == ["0123456789abcdef"]
    with pytest.raises(WebhookConfigError, match="previous_secret must be at least 16"):
        load_config(write(tmp_path, "endpoints:\n  房管办:\n    url: https://x/\n    secret: 0123456789abcdef\n"
                                    "    previous_secret: short\n"))


def test_directory_matches_the_packaged_city() -> None:
    """Every department the KB can route to may have an endpoint (the list cannot drift from city.yaml)."""
    from streams.core.knowledge.geo import City
    from streams.core.knowledge.knowledge import DATA_DIR
    from streams.sinks.webhooks.config import DEPARTMENTS

    assert set(DEPARTMENTS) == set(City.load(DATA_DIR / "city" / "city.yaml").departments)
