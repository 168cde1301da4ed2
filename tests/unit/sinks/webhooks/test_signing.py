"""HMAC-SHA256 signatures over timestamp + "." + body, verified by the documented recipe."""
from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, strategies as st

from streams.sinks.webhooks.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, sign, signed_headers, verify_signature

SECRET = "0123456789abcdef-secret"


def test_recipe_from_the_docs_matches() -> None:
    body = '{"kind":"dispatch","case":{"category_name":"群租"}}'.encode()
    ts = "1773540000"
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, ts, body) == "sha256=" + expected


def test_headers_verify_and_carry_key_attempt() -> None:
    body = b'{"a":1}'
    h = signed_headers(SECRET, body, "k" * 64, 3, "urge", "wh-1", now_s=1_000_000)
    assert h["Idempotency-Key"] == "k" * 64 and h["X-Citygrid-Attempt"] == "3" and h["X-Citygrid-Event"] == "urge"
    assert verify_signature(SECRET, h[HEADER_TIMESTAMP], body, h[HEADER_SIGNATURE], now_s=1_000_010)


def test_wrong_secret_body_timestamp_or_stale_fails() -> None:
    body = b'{"a":1}'
    h = signed_headers(SECRET, body, "k", 1, "dispatch", "wh-1", now_s=1_000_000)
    ts, sig = h[HEADER_TIMESTAMP], h[HEADER_SIGNATURE]
    assert not verify_signature("another-secret-xxxxxx", ts, body, sig, now_s=1_000_000)
    assert not verify_signature(SECRET, ts, b'{"a":2}', sig, now_s=1_000_000)
    assert not verify_signature(SECRET, "1000001", body, sig, now_s=1_000_000)
    assert not verify_signature(SECRET, ts, body, sig, tolerance_s=300, now_s=1_000_301)  # a replay, too old
    assert not verify_signature(SECRET, "not-a-number", body, sig, now_s=1_000_000)
    assert not verify_signature(SECRET, ts, body, "", now_s=1_000_000)


@given(body=st.binary(max_size=200), flip=st.integers(0, 199), ts=st.integers(0, 4_000_000_000))
def test_any_changed_byte_breaks_the_signature(body: bytes, flip: int, ts: int) -> None:
    sig = sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, sig, now_s=ts)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
        assert not verify_signature(SECRET, ts, tampered, sig, now_s=ts)
