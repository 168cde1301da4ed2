"""HMAC-SHA256 signatures over timestamp + "." + body, verified by the documented recipe."""
from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

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


def test_during_a_rotation_both_secrets_verify_and_a_third_does_not() -> None:
    body = b'{"a":1}'
    new, old = "the-new-secret-0123456", "the-old-secret-0123456"
    h = signed_headers([new, old], body, "k", 1, "dispatch", "wh-1", now_s=1_000_000)
    assert h[HEADER_SIGNATURE].count("sha256=") == 2 and h[HEADER_SIGNATURE].startswith(sign(new, 1_000_000, body))
    assert verify_signature(new, h[HEADER_TIMESTAMP], body, h[HEADER_SIGNATURE], now_s=1_000_000)
    assert verify_signature(old, h[HEADER_TIMESTAMP], body, h[HEADER_SIGNATURE], now_s=1_000_000)
    assert not verify_signature("a-third-secret-0123456", h[HEADER_TIMESTAMP], body, h[HEADER_SIGNATURE],
                                now_s=1_000_000)


def test_the_documented_receiver_recipe_accepts_rotated_signatures_and_dedupes_on_the_signed_key() -> None:
    """The dependency-free recipe of docs/webhooks.md, as written there."""
    import json
    import re

    from tests.paths import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    recipe = re.search(r"Without this package:\n\n```python\n(.*?)```", doc, re.S)
    assert recipe, "docs/webhooks.md lost its receiver recipe"
    namespace: dict = {}
    exec(recipe.group(1), namespace)  # noqa: S102 - the documented code, run as a receiver would
    receive = namespace["receive"]
    seen: set[str] = set()
    body = json.dumps({"idempotency_key": "k1", "kind": "dispatch"}).encode()
    ts = str(int(__import__("time").time()))
    header = ",".join(sign(s, ts, body) for s in ("the-new-secret-0123456", "the-old-secret-0123456"))
    assert receive("the-old-secret-0123456", ts, body, header, seen) == (200, "accepted")
    assert receive("the-old-secret-0123456", ts, body, header, seen) == (200, "duplicate")
    assert receive("a-wrong-secret-0123456", ts, body, header, seen)[0] == 401
