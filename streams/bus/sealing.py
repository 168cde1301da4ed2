"""Dead-letter originals sealed with Fernet (``cryptography``): AES-128-CBC with an HMAC-SHA256 tag.

A record that fails validation may carry anything a caller typed, phone numbers included; its
original bytes are kept for reprocessing, so they are encrypted before they reach the dead-letter
topic (and, through the sink, ClickHouse). ``CITYGRID_DLQ_KEY`` holds one or more Fernet keys,
newest first: the first encrypts, every one decrypts (``MultiFernet``), so a key is rotated by
putting a new one in front and dropping the old one once ``streams dlq`` no longer needs it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# A Fernet token is URL-safe base64 of 0x80 | timestamp | IV | ciphertext | HMAC: it starts with "gAAAAA".
TOKEN_PREFIX = b"gAAAAA"


class SealingError(ValueError):
    """A key that is not a Fernet key, or a sealed record no configured key opens."""


def generate_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64)."""
    return Fernet.generate_key().decode("ascii")


def split_keys(value: str) -> list[str]:
    """Keys from a setting: separated by commas or whitespace, newest first."""
    return [k for k in re.split(r"[\s,]+", value.strip()) if k]


class DeadLetterSealer:
    """Seals and opens dead-letter originals under the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            raise SealingError("no dead-letter key: set CITYGRID_DLQ_KEY to a Fernet key (python -c 'from "
                               "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.encode("ascii") if isinstance(key, str) else key))
            except (ValueError, TypeError, UnicodeEncodeError) as exc:
                raise SealingError(f"dead-letter key #{i + 1} is not a Fernet key (32 bytes, URL-safe base64): "
                                   f"{exc}") from None
        self._fernet = MultiFernet(fernets)
        self.key_count = len(fernets)

    @classmethod
    def from_setting(cls, value: str) -> DeadLetterSealer:
        return cls(split_keys(value))

    @classmethod
    def ephemeral(cls) -> DeadLetterSealer:
        """A random key for one process (in-process tests): what it seals, nobody else opens."""
        return cls([generate_key()])

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(bytes(data))

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(bytes(token))
        except InvalidToken:
            raise SealingError("no configured dead-letter key opens this record (rotated away, or not sealed)") \
                from None

    def reseal(self, token: bytes) -> bytes:
        """The same plaintext under the newest key (after a rotation)."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken:
            raise SealingError("no configured dead-letter key opens this record") from None


def looks_sealed(data: bytes | None) -> bool:
    """True for what :meth:`DeadLetterSealer.seal` produces (records written before sealing was on are not)."""
    return data is not None and bytes(data).startswith(TOKEN_PREFIX)
