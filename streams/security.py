"""Secrets from settings, turned into the objects the pipeline uses (docs/security.md).

The domain core never reads settings: the worker builds a :class:`Pseudonymizer` and a
:class:`DeadLetterSealer` here and passes them in. A worker refuses to start without its keys;
in-process helpers (tests, ``streams replay``) fall back to random per-process keys, which keep
personal data unrecoverable rather than in clear.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from streams.bus.sealing import DeadLetterSealer, SealingError, generate_key
from streams.core.privacy import Pseudonymizer, PseudonymKey, PseudonymKeyError
from streams.settings import Settings


class MissingSecret(SystemExit):
    """The worker is missing a key it must not run without; the message says how to set it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("refusing to start: " + "; ".join(problems) + " (see docs/security.md)")
        self.problems = problems


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The configured pseudonym keys, or a random per-process key when none is set."""
    if settings.pii_key is None:
        return Pseudonymizer.ephemeral()
    previous = [PseudonymKey.from_secret(k.get_secret_value()) for k in settings.pii_previous_keys]
    return Pseudonymizer(PseudonymKey.from_secret(settings.pii_key.get_secret_value()), previous)


def dlq_sealer(settings: Settings) -> DeadLetterSealer:
    """The configured dead-letter keys, or a random per-process key when none is set."""
    if settings.dlq_key is None:
        return DeadLetterSealer.ephemeral()
    return DeadLetterSealer.from_setting(settings.dlq_key.get_secret_value())


def require_worker_secrets(settings: Settings) -> None:
    """Raise :class:`MissingSecret` unless the pseudonym and dead-letter keys are set and usable."""
    problems: list[str] = []
    if settings.pii_key is None:
        problems.append("CITYGRID_PII_KEY is not set: callers' pseudonyms need a secret key of at least 32 "
                        "characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    else:
        try:
            pseudonymizer(settings)
        except PseudonymKeyError as exc:
            problems.append(f"CITYGRID_PII_KEY: {exc}")
    if settings.dlq_key is None:
        problems.append("CITYGRID_DLQ_KEY is not set: dead-letter originals are sealed with a Fernet key "
                        "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
    else:
        try:
            dlq_sealer(settings)
        except SealingError as exc:
            problems.append(f"CITYGRID_DLQ_KEY: {exc}")
    if not is_loopback_host(settings.web_host) and settings.wall_token is None:
        problems.append(f"CITYGRID_WEB_HOST is {settings.web_host}, not a loopback address: /wall/ then needs "
                        "CITYGRID_WALL_TOKEN (python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if problems:
        raise MissingSecret(problems)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_secret_file(path: Path, what: str) -> str:
    """A secret mounted as a file (a Kubernetes Secret volume): its text without the trailing newline."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise MissingSecret([f"{what}: cannot read {path}: {exc.strerror}"]) from None


def demo_secrets(directory: Path) -> dict[str, str]:
    """The demo's keys, generated once under ``directory`` (mode 0600) and reused by later demos, as
    environment variables for the processes the demo starts."""
    directory.mkdir(parents=True, exist_ok=True)
    made = {"CITYGRID_PII_KEY": ("pii.key", lambda: secrets.token_urlsafe(32)),
            "CITYGRID_DLQ_KEY": ("dlq.key", generate_key)}
    env: dict[str, str] = {}
    for name, (filename, generate) in made.items():
        path = directory / filename
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(generate() + "\n")
        env[name] = read_secret_file(path, name)
    return env
