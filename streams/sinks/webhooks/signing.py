"""Request signing: HMAC-SHA256 over ``timestamp + "." + body``, hex-encoded as ``sha256=<hex>``.

While an endpoint's secret is being rotated the header carries one signature per active secret,
comma-separated, newest first (``sha256=<new>,sha256=<old>``): a receiver accepts the request when
any of them verifies under its secret. Receivers verify with ``verify_signature`` (or the recipe in
docs/webhooks.md, any language).
"""
from __future__ import annotations

import hashlib
import hmac
import time

HEADER_KEY = "Idempotency-Key"
HEADER_ATTEMPT = "X-Citygrid-Attempt"
HEADER_TIMESTAMP = "X-Citygrid-Timestamp"
HEADER_SIGNATURE = "X-Citygrid-Signature"
HEADER_EVENT = "X-Citygrid-Event"
HEADER_DELIVERY = "X-Citygrid-Delivery"
SIGNATURE_PREFIX = "sha256="


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """``sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``."""
    message = _as_bytes(str(timestamp)) + b"." + _as_bytes(body)
    return SIGNATURE_PREFIX + hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign_all(secrets: list[str], timestamp: str | int, body: bytes | str) -> str:
    """The signature header: one ``sha256=<hex>`` per secret, comma-separated, newest first."""
    return ",".join(sign(secret, timestamp, body) for secret in secrets)


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    signature: str,
    tolerance_s: float = 300.0,
    now_s: float | None = None,
) -> bool:
    """True when one of the signatures in the header is ours for this exact body and the timestamp is
    within ``tolerance_s`` of now (refuses replays of old requests). Constant-time comparisons."""
    try:
        ts = int(str(timestamp))
    except ValueError:
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).encode()
    matches = [hmac.compare_digest(expected, part.strip().encode()) for part in str(signature).split(",")]
    return any(matches)


def signed_headers(
    secret: str | list[str], body: bytes, idempotency_key: str, attempt: int, kind: str, delivery_id: str,
    now_s: float | None = None,
) -> dict[str, str]:
    """All headers of one delivery attempt (the timestamp is taken per attempt); ``secret`` may be the
    endpoint's active secrets (current first) during a rotation."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    ts = int(time.time() if now_s is None else now_s)
    return {
        "Content-Type": "application/json; charset=utf-8",
        HEADER_KEY: idempotency_key,
        HEADER_ATTEMPT: str(attempt),
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: sign_all(secrets, ts, body),
        HEADER_EVENT: kind,
        HEADER_DELIVERY: delivery_id,
        "User-Agent": "citygrid-streams-webhooks/1",
    }
