"""Deterministic ids: a re-delivered or replayed record yields the same id (idempotent rows and signals)."""
from __future__ import annotations

import hashlib


def stable_id(prefix: str, *parts: str) -> str:
    """``prefix-`` and 20 hex digits of the SHA-1 of the parts."""
    return f"{prefix}-" + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:20]
