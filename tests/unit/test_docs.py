"""The README tells a newcomer the truth: both set-up commands, every setting."""
from __future__ import annotations

from pathlib import Path

from streams.cli.main import build_parser
from streams.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_gives_the_two_setup_commands() -> None:
    assert "make demo" in README and "make test" in README


def test_readme_lists_every_setting() -> None:
    missing = [name for name in Settings.model_fields if f"CITYGRID_{name.upper()}" not in README]
    assert not missing, f"settings missing from README: {missing}"


def test_readme_lists_every_command() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [name for name in commands if f"streams {name}" not in README]
    assert not missing, f"commands missing from README: {missing}"
