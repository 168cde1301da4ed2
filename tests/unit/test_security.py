"""Secrets from settings: the worker refuses to start without its keys; the demo makes its own."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streams.bus.sealing import DeadLetterSealer, generate_key
from streams.security import MissingSecret, demo_secrets, dlq_sealer, pseudonymizer, require_worker_secrets
from streams.settings import Settings
from tests.paths import REPO_ROOT

PII = "a-deployment-pseudonym-key-of-40-characters"


def test_without_keys_the_worker_settings_are_refused_with_instructions() -> None:
    with pytest.raises(MissingSecret) as caught:
        require_worker_secrets(Settings(pii_key=None, dlq_key=None))
    message = str(caught.value)
    assert "CITYGRID_PII_KEY is not set" in message and "CITYGRID_DLQ_KEY is not set" in message
    assert "docs/security.md" in message


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(MissingSecret, match="CITYGRID_PII_KEY: a pseudonym key needs at least 32"):
        require_worker_secrets(Settings(pii_key="short", dlq_key=generate_key()))
    with pytest.raises(MissingSecret, match="CITYGRID_DLQ_KEY: dead-letter key #1 is not a Fernet key"):
        require_worker_secrets(Settings(pii_key=PII, dlq_key="nope"))
    require_worker_secrets(Settings(pii_key=PII, dlq_key=generate_key()))


def test_two_deployments_two_pseudonyms_and_rotation_keeps_old_ones_findable() -> None:
    a = pseudonymizer(Settings(pii_key=PII))
    b = pseudonymizer(Settings(pii_key=PII.replace("a-", "b-")))
    assert a.caller("13912345678") != b.caller("13912345678")
    rotated = pseudonymizer(Settings(pii_key=PII.replace("a-", "b-"), pii_previous_keys=[PII]))
    assert rotated.every_pseudonym("13912345678") == [b.caller("13912345678"), a.caller("13912345678")]


def test_dlq_keys_from_settings_newest_first() -> None:
    old, new = generate_key(), generate_key()
    token = DeadLetterSealer([old]).seal(b"x")
    assert dlq_sealer(Settings(dlq_key=f"{new},{old}")).open(token) == b"x"


def test_the_worker_command_exits_with_the_message_before_touching_kafka(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
    env["CITYGRID_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"   # nothing listens: a worker that got that far would hang
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "refusing to start: CITYGRID_PII_KEY is not set" in proc.stderr


def test_demo_keys_are_generated_once_private_and_usable(tmp_path: Path) -> None:
    first = demo_secrets(tmp_path / "keys")
    assert demo_secrets(tmp_path / "keys") == first
    for name in ("pii.key", "dlq.key"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    require_worker_secrets(Settings(pii_key=first["CITYGRID_PII_KEY"], dlq_key=first["CITYGRID_DLQ_KEY"]))
    assert REPO_ROOT.joinpath(".gitignore").read_text().count("var") >= 1, "demo keys live under var/, not in git"


def test_an_open_web_port_needs_a_wall_token() -> None:
    keys = {"pii_key": PII, "dlq_key": generate_key()}
    with pytest.raises(MissingSecret, match="CITYGRID_WEB_HOST is 0.0.0.0, not a loopback address"):
        require_worker_secrets(Settings(web_host="0.0.0.0", **keys))
    require_worker_secrets(Settings(web_host="0.0.0.0", wall_token="t" * 24, **keys))
    require_worker_secrets(Settings(web_host="127.0.0.1", **keys))
    require_worker_secrets(Settings(web_host="::1", **keys))
